// The subcommands: each adds its options to the app and runs from the parsed options.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
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
CLI::App* add_demo(CLI::App& app, DemoOptions& o);
int run_demo(DemoOptions& o);

struct BenchOptions {
  CommonOptions common;
  std::vector<std::int64_t> lengths{4096, 8192};
  std::vector<double> densities{1.0, 0.5, 0.2, 0.1, 0.05};
  int q_heads = 32, kv_heads = 8, head_dim = 128;
  bool estimated = false;
  std::uint64_t seed = 1;
};
CLI::App* add_bench(CLI::App& app, BenchOptions& o);
int run_bench(BenchOptions& o);

struct EvalOptions {
  CommonOptions common;
  std::string path;
  std::string dtype = "file";
};
CLI::App* add_eval(CLI::App& app, EvalOptions& o);
int run_eval(EvalOptions& o);

}  // namespace proxyattn::tool
