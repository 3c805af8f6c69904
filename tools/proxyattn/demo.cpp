// demo: ProxyAttn on the embedded structured input (synthetic.hpp), with the accuracy and the
// time of every stage against dense attention.
#include <cstdio>
#include <string>

#include "commands.hpp"
#include "synthetic.hpp"

namespace proxyattn::tool {

CLI::App* add_demo(CLI::App& app, DemoOptions& o) {
  CLI::App* cmd = app.add_subcommand("demo", "run ProxyAttn on the embedded structured input and compare with dense");
  cmd->add_option("--tokens", o.tokens, "sequence length")->check(CLI::Range(static_cast<std::int64_t>(1), static_cast<std::int64_t>(1) << 30));
  cmd->add_option("--q-heads", o.q_heads, "query heads")->check(CLI::Range(1, 1024));
  cmd->add_option("--kv-heads", o.kv_heads, "key/value heads (must divide --q-heads)")->check(CLI::Range(1, 1024));
  cmd->add_option("--head-dim", o.head_dim, "head dimension (even, >= 8)")->check(CLI::Range(8, 1024));
  cmd->add_option("--seed", o.seed, "seed of the embedded input");
  add_common_options(*cmd, o.common);
  return cmd;
}

int run_demo(DemoOptions& o) {
  finish_options(o.common);
  if (o.q_heads % o.kv_heads != 0)
    throw UsageError("--q-heads (" + std::to_string(o.q_heads) + ") must be a multiple of --kv-heads (" +
                     std::to_string(o.kv_heads) + ")");
  if (o.head_dim % 2 != 0) throw UsageError("--head-dim must be even, got " + std::to_string(o.head_dim));
  const Device dev = resolve_device(o.common.device);
  Problem p = Problem::single(o.tokens, o.q_heads, o.kv_heads, o.head_dim, parse_dtype(o.common.dtype), dev);
  if (dev == Device::cuda && p.dtype == DType::float32) throw UsageError("--dtype fp32 runs on the CPU only");
  SyntheticSpec spec;
  spec.tokens = o.tokens;
  spec.q_heads = o.q_heads;
  spec.kv_heads = o.kv_heads;
  spec.head_dim = o.head_dim;
  spec.seed = o.seed;
  const SyntheticQkv x = make_structured_qkv(spec);
  DeviceTensors t = upload(p, x.q.data(), x.k.data(), x.v.data());
  Plan plan(o.common.config, p);
  const Measurement m = measure(plan, t, default_repeat(dev, o.common.repeat));
  report(plan, m, o.common.json,
         "proxyattn demo: embedded structured input (sinks, local windows, " + std::to_string(x.retrieval_tokens.size()) +
             " retrieval tokens sought by heads 1, 5, 9, ..., heads of different sparsity)");
  return 0;
}

}  // namespace proxyattn::tool
