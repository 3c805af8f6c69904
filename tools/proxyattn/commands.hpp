// The subcommands: their options, the parsed command line, and each one's run.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common.hpp"

namespace proxyattn::tool {

struct DemoOptions {
  CommonOptions common;
  std::int64_t tokens = 0;  // 0: sized to the device
  int q_heads = 32, kv_heads = 8, head_dim = 128;
  std::uint64_t seed = 1;
  std::string png;
  int png_kv_head = 0;
};
int run_demo(DemoOptions& o);

struct BenchOptions {
  CommonOptions common;
  std::vector<std::int64_t> lengths{4096, 8192};
  std::vector<double> densities{1.0, 0.5, 0.2, 0.1, 0.05};
  int q_heads = 32, kv_heads = 8, head_dim = 128;
  bool estimated = false;
  std::uint64_t seed = 1;
};
int run_bench(BenchOptions& o);

struct EvalOptions {
  CommonOptions common;
  std::string path;
  std::string dtype = "file";
};
int run_eval(EvalOptions& o);

enum class Command { demo, bench, eval };
struct CommandLine {
  Command command = Command::demo;
  DemoOptions demo;
  BenchOptions bench;
  EvalOptions eval;
};
// Parses argv into cl (options.cpp). --help, --version and a bad command line are answered here:
// the exit status is returned (0, or 2 for a usage error), and nothing is to be run.
std::optional<int> parse_command_line(int argc, char** argv, CommandLine& cl);

// The option that sets each Config field (PROXYATTN_CONFIG_FIELDS; a test checks that every field
// has one): scale is each call's (1/sqrt(head_dim)), and --device picks the backend.
const std::vector<std::pair<std::string, std::string>>& config_options();
// Whether every subcommand has an option of that name ("--gamma"), one of the common options.
bool is_common_option(const std::string& name);

}  // namespace proxyattn::tool
