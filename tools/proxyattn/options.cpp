// The command line: the subcommands, their options and the parsing. The one file that includes
// CLI11: the header-only library costs every file that includes it about 6 s of compile time at
// -O2, 20 to 45 s under ASan and UBSan.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "commands.hpp"

namespace proxyattn::tool {

namespace {

// The ProxyAttn parameters and the device/dtype/output options of a subcommand.
void add_common_options(CLI::App& app, CommonOptions& o, bool with_dtype = true) {
  app.add_option("--device", o.device, "where to run: auto (cuda when present), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  if (with_dtype)
    app.add_option("--dtype", o.dtype, "input dtype: bf16, fp16 or fp32 (fp32 is CPU only)")
        ->check(CLI::IsMember({"bf16", "fp16", "fp32"}));
  app.add_option("--block-size", o.config.block_size, "query and key block size B (CUDA: 128)");
  app.add_option("--stride", o.config.stride, "proxy token stride s");
  app.add_option("--proxy-groups", o.config.proxy_groups, "proxy groups g, dividing the kv head count");
  app.add_option("--gamma", o.config.gamma, "attention mass each head's budget covers, in [0, 1]");
  app.add_option("--min-budget", o.config.min_budget_tokens, "floor on every head's budget, in tokens");
  app.add_flag("--no-sink", o.no_sink, "do not force the first key block");
  app.add_option("--budget-mode", o.budget_mode,
                 "row_ratio (budget ratio applied to each row), last_row_count (one count for all rows) or row_mass "
                 "(each row's count from the head's masses on its causal prefix)")
      ->check(CLI::IsMember({"row_ratio", "last_row_count", "row_mass"}))
      ->capture_default_str();
  app.add_option("--exact-last-block", o.config.exact_last_block,
                 "the last query block ranks by each head's own stage-2 masses (true/false)")
      ->capture_default_str();
  app.add_option("--head-columns", o.config.head_columns,
                 "each head first keeps its own highest-mass key blocks in every row, up to this many")
      ->capture_default_str();
  app.add_option("--last-block-gamma", o.config.last_block_gamma,
                 "the last query block keeps each head's blocks up to this share of its mass (at least gamma)")
      ->capture_default_str();
  app.add_option("--cpu-kernels", o.cpu_kernels,
                 "CPU vector kernels: empty for the widest this CPU runs, else sse2, sse4, avx2, avx512 or neon");
  app.add_option("--repeat", o.repeat, "timed runs per measurement (median); default 1 on the CPU, 5 on CUDA")
      ->check(CLI::Range(0, 1000));
  app.add_flag("--json", o.json, "print JSON instead of tables");
}

CLI::App* add_demo(CLI::App& app, DemoOptions& o) {
  CLI::App* cmd = app.add_subcommand("demo", "run ProxyAttn on the embedded structured input and compare with dense");
  cmd->add_option("--tokens", o.tokens,
                  "sequence length; 0: 32768 on a GPU (the Llama-3.1-8B layer shape), 8192 on the CPU (about 10 s on 2 cores)")
      ->check(CLI::Range(static_cast<std::int64_t>(0), static_cast<std::int64_t>(1) << 30));
  cmd->add_option("--q-heads", o.q_heads, "query heads")->check(CLI::Range(1, 1024));
  cmd->add_option("--kv-heads", o.kv_heads, "key/value heads (must divide --q-heads)")->check(CLI::Range(1, 1024));
  cmd->add_option("--head-dim", o.head_dim, "head dimension (even, >= 8)")->check(CLI::Range(8, 1024));
  cmd->add_option("--seed", o.seed, "seed of the embedded input");
  cmd->add_option("--png", o.png, "write the mask of one kv head's query heads as a PNG picture to this file");
  cmd->add_option("--png-kv-head", o.png_kv_head, "the kv head whose query heads --png draws")->check(CLI::NonNegativeNumber);
  add_common_options(*cmd, o.common);
  return cmd;
}

CLI::App* add_bench(CLI::App& app, BenchOptions& o) {
  CLI::App* cmd = app.add_subcommand("bench", "time dense and sparse attention over lengths and densities");
  cmd->add_option("--lengths", o.lengths, "sequence lengths")->check(CLI::Range(static_cast<std::int64_t>(1), static_cast<std::int64_t>(1) << 30));
  cmd->add_option("--densities", o.densities, "target densities of the random masks, in (0, 1]")
      ->check(CLI::Validator(
          [](std::string& s) {
            const double x = std::strtod(s.c_str(), nullptr);
            return x >= 1e-6 && x <= 1.0 ? std::string() : "a density must be a number in [1e-6, 1], got " + s;
          },
          "DENSITY in [1e-6, 1]"));
  cmd->add_option("--q-heads", o.q_heads, "query heads")->check(CLI::Range(1, 1024));
  cmd->add_option("--kv-heads", o.kv_heads, "key/value heads")->check(CLI::Range(1, 1024));
  cmd->add_option("--head-dim", o.head_dim, "head dimension")->check(CLI::Range(8, 1024));
  cmd->add_flag("--estimated", o.estimated,
                "also run the estimator on the embedded structured input and time sparse attention at its density");
  cmd->add_option("--seed", o.seed, "seed of the inputs and masks");
  add_common_options(*cmd, o.common);
  return cmd;
}

CLI::App* add_eval(CLI::App& app, EvalOptions& o) {
  CLI::App* cmd = app.add_subcommand("eval", "ProxyAttn accuracy and timing on Q, K, V from a safetensors file");
  cmd->add_option("file", o.path, "safetensors file with tensors q, k, v (and optionally cu_seqlens)")->required();
  cmd->add_option("--dtype", o.dtype, "compute dtype: file (as stored; fp32 becomes bf16 on cuda), bf16, fp16 or fp32")
      ->check(CLI::IsMember({"file", "bf16", "fp16", "fp32"}));
  add_common_options(*cmd, o.common, false);
  return cmd;
}

}  // namespace

const std::vector<std::pair<std::string, std::string>>& config_options() {
  static const std::vector<std::pair<std::string, std::string>> options = {
      {"block_size", "--block-size"},   {"stride", "--stride"},           {"proxy_groups", "--proxy-groups"},
      {"gamma", "--gamma"},             {"min_budget_tokens", "--min-budget"}, {"keep_sink", "--no-sink"},
      {"budget_mode", "--budget-mode"}, {"exact_last_block", "--exact-last-block"},
      {"head_columns", "--head-columns"}, {"last_block_gamma", "--last-block-gamma"},
      {"scale", ""},                    {"backend", "--device"}};
  return options;
}

bool is_common_option(const std::string& name) {
  CLI::App app;
  CommonOptions o;
  add_common_options(app, o);
  return app.get_option_no_throw(name) != nullptr;
}

std::optional<int> parse_command_line(int argc, char** argv, CommandLine& cl) {
  CLI::App app{"proxyattn: ProxyAttn block-sparse attention for long-context prefill"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "proxyattn 0.1.0");
  app.option_defaults()->always_capture_default();  // --help shows every option's default
  CLI::App* demo = add_demo(app, cl.demo);
  CLI::App* bench = add_bench(app, cl.bench);
  add_eval(app, cl.eval);
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
  cl.command = demo->parsed() ? Command::demo : bench->parsed() ? Command::bench : Command::eval;
  return std::nullopt;
}

}  // namespace proxyattn::tool
