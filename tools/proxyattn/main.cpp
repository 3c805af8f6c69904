// proxyattn: the command-line tool. `demo` is the main job; `bench` sweeps lengths and
// densities; `eval` judges Q, K, V captured from a real model.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "commands.hpp"
#include "common.hpp"
#include "safetensors.hpp"

int main(int argc, char** argv) {
  using namespace proxyattn::tool;
  CLI::App app{"proxyattn: ProxyAttn block-sparse attention for long-context prefill"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "proxyattn 0.1.0");
  app.option_defaults()->always_capture_default();  // --help shows every option's default
  DemoOptions demo;
  BenchOptions bench;
  EvalOptions eval;
  CLI::App* demo_cmd = add_demo(app, demo);
  CLI::App* bench_cmd = add_bench(app, bench);
  CLI::App* eval_cmd = add_eval(app, eval);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  try {
    if (demo_cmd->parsed()) return run_demo(demo);
    if (bench_cmd->parsed()) return run_bench(bench);
    if (eval_cmd->parsed()) return run_eval(eval);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "proxyattn: %s\n", e.what());
    return 2;
  } catch (const FormatError& e) {
    std::fprintf(stderr, "proxyattn: %s\n", e.what());
    return 2;
  } catch (const proxyattn::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return e.code() == proxyattn::ErrorCode::runtime ? 1 : 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "proxyattn: error: %s\n", e.what());
    return 1;
  }
  return 2;
}
