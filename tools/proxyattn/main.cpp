// proxyattn: the command-line tool. `demo` is the main job; `bench` sweeps lengths and
// densities; `eval` judges Q, K, V captured from a real model.
#include <cstdio>

#include "commands.hpp"
#include "safetensors.hpp"

int main(int argc, char** argv) {
  using namespace proxyattn::tool;
  CommandLine cl;
  if (const auto status = parse_command_line(argc, argv, cl)) return *status;
  try {
    switch (cl.command) {
      case Command::demo: return run_demo(cl.demo);
      case Command::bench: return run_bench(cl.bench);
      case Command::eval: return run_eval(cl.eval);
    }
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
