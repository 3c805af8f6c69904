// bench: dense and block-sparse attention over lengths and densities (random masks that keep the
// forced blocks), and optionally the estimator on the structured input at each length.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "commands.hpp"
#include "cpu/simd.hpp"
#include "synthetic.hpp"

namespace proxyattn::tool {

namespace {

// Causal query/key pairs of (query block m, key block n) in a sequence of len tokens.
double pairs(std::int64_t m, std::int64_t n, std::int64_t len, int B) {
  const std::int64_t rows = std::min<std::int64_t>(B, len - m * B);
  if (n < m) return static_cast<double>(rows) * B;
  return static_cast<double>(rows) * (rows + 1) / 2;
}

// FLOPs of the kept tiles: 4 * D per causal pair (QK^T and PV).
double mask_flops(const HostBlockMask& mask, std::int64_t len, int heads, int D) {
  double total = 0;
  for (std::int64_t r = 0; r < mask.num_rows(); ++r)
    for (std::int64_t e = mask.row_offsets[r]; e < mask.row_offsets[r + 1]; ++e)
      total += pairs(r / heads, mask.col_indices[e], len, mask.block_size);
  return 4.0 * D * total;
}

HostBlockMask random_mask(std::int64_t nb, int heads, int B, double density, bool sink, std::mt19937_64& rng) {
  HostBlockMask m;
  m.block_size = B;
  m.num_heads = heads;
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<std::int32_t> row;
  for (std::int64_t b = 0; b < nb; ++b)
    for (int h = 0; h < heads; ++h) {
      row.clear();
      for (std::int64_t n = 0; n <= b; ++n)
        if (n == b || (sink && n == 0) || u(rng) < density) row.push_back(static_cast<std::int32_t>(n));
      m.add_row(row);
    }
  return m;
}

// A host mask as a view on the run's device (copied there when needed).
struct MaskOnDevice {
  Buffer offsets, indices;
  BlockMask view;
  MaskOnDevice(const HostBlockMask& m, Device dev) {
    view = m.view();
    if (dev != Device::cuda) return;
    offsets = Buffer(dev, m.row_offsets.size() * 8);
    indices = Buffer(dev, std::max<std::size_t>(1, m.col_indices.size()) * 4);
    offsets.copy_from_host(m.row_offsets.data(), m.row_offsets.size() * 8);
    indices.copy_from_host(m.col_indices.data(), m.col_indices.size() * 4);
    view.device = dev;
    view.row_offsets = static_cast<const std::int64_t*>(offsets.data());
    view.col_indices = static_cast<const std::int32_t*>(indices.data());
  }
};

}  // namespace

int run_bench(BenchOptions& o) {
  finish_options(o.common);
  if (o.q_heads % o.kv_heads != 0) throw UsageError("--q-heads must be a multiple of --kv-heads");
  const Device dev = resolve_device(o.common.device);
  const DType dt = parse_dtype(o.common.dtype);
  if (dev == Device::cuda && dt == DType::float32) throw UsageError("--dtype fp32 runs on the CPU only");
  const int repeat = default_repeat(dev, o.common.repeat);
  const Config& c = o.common.config;
  nlohmann::json records = nlohmann::json::array();
  std::mt19937_64 rng(o.seed);

  if (!o.common.json)
    std::printf("%8s %10s %9s %11s %11s %9s %9s\n", "tokens", "mask", "density", "sparse ms", "dense ms", "speedup",
                "GFLOP/s");
  for (std::int64_t len : o.lengths) {
    Problem p = Problem::single(len, o.q_heads, o.kv_heads, o.head_dim, dt, dev);
    Plan plan(c, p);
    std::vector<float> q(len * o.q_heads * o.head_dim), k(len * o.kv_heads * o.head_dim), v(k.size());
    std::normal_distribution<float> normal(0.f, 1.f);
    for (float& x : q) x = normal(rng);
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = normal(rng);
    DeviceTensors t = upload(p, q.data(), k.data(), v.data());
    const double dense_ms = time_ms(dev, repeat, [&] { dense_attention(plan, t.qv, t.kv, t.vv, t.odv, TensorView{}); });
    const std::int64_t nb = plan.num_blocks();
    // est_ms, layer_ms: the estimate alone and the whole layer in one call (estimate, then the
    // sparse kernel on its mask), both on the structured input; negative: not run.
    auto emit = [&](const std::string& kind, double density, double sparse_ms, double flops, double est_ms,
                    double layer_ms) {
      const double speed = sparse_ms > 0 ? dense_ms / sparse_ms : 0;
      const double gflops = flops / (sparse_ms * 1e6);
      if (o.common.json) {
        nlohmann::json r{{"tokens", len}, {"mask", kind}, {"density", density}, {"sparse_ms", sparse_ms},
                         {"dense_ms", dense_ms}, {"speedup", speed}, {"gflops_kept", gflops},
                         {"backend", backend_name(plan.backend())}, {"dtype", dtype_name(dt)},
                         {"dense_gflops", 2.0 * o.head_dim * o.q_heads * static_cast<double>(len) * (len + 1) / (dense_ms * 1e6)},
                         {"q_heads", o.q_heads}, {"kv_heads", o.kv_heads}, {"head_dim", o.head_dim}};
        if (plan.backend() == Backend::cpu) r["cpu_kernels"] = detail::cpu::kernels().name;
        if (est_ms >= 0) r["estimate_ms"] = est_ms, r["speedup_with_estimate"] = dense_ms / (sparse_ms + est_ms);
        if (layer_ms > 0) r["layer_ms"] = layer_ms, r["layer_speedup"] = dense_ms / layer_ms;
        records.push_back(r);
      } else {
        std::printf("%8lld %10s %8.1f%% %11.2f %11.2f %8.2fx %9.1f", static_cast<long long>(len), kind.c_str(),
                    100 * density, sparse_ms, dense_ms, speed, gflops);
        if (est_ms >= 0) std::printf("   estimate %.2f ms, dense/(estimate+sparse) %.2fx", est_ms, dense_ms / (sparse_ms + est_ms));
        if (layer_ms > 0) std::printf(", layer %.2f ms (dense/layer %.2fx)", layer_ms, dense_ms / layer_ms);
        std::printf("\n");
      }
    };
    for (double density : o.densities) {
      const HostBlockMask hm = random_mask(nb, o.q_heads, c.block_size, density, c.keep_sink, rng);
      MaskOnDevice md(hm, dev);
      const double ms = time_ms(dev, repeat, [&] { sparse_attention(plan, t.qv, t.kv, t.vv, md.view, t.osv, TensorView{}); });
      const double kept = static_cast<double>(hm.nnz()) / (o.q_heads * nb * (nb + 1) / 2.0);
      emit("random", kept, ms, mask_flops(hm, len, o.q_heads, o.head_dim), -1, -1);
    }
    if (o.estimated) {
      SyntheticSpec spec;
      spec.tokens = len;
      spec.q_heads = o.q_heads;
      spec.kv_heads = o.kv_heads;
      spec.head_dim = o.head_dim;
      spec.seed = o.seed;
      const SyntheticQkv x = make_structured_qkv(spec);
      DeviceTensors s = upload(p, x.q.data(), x.k.data(), x.v.data());
      Estimate e;
      const double est_ms = time_ms(dev, repeat, [&] { e = estimate(plan, s.qv, s.kv); });
      const HostEstimate he = to_host(plan, e);
      const double ms = time_ms(dev, repeat, [&] { sparse_attention(plan, s.qv, s.kv, s.vv, e.mask, s.osv, TensorView{}); });
      const double layer_ms = time_ms(dev, repeat, [&] { attention(plan, s.qv, s.kv, s.vv, s.osv, TensorView{}); });
      emit("estimated", he.density(), ms, mask_flops(he.mask, len, o.q_heads, o.head_dim), est_ms, layer_ms);
    }
  }
  if (o.common.json) std::printf("%s\n", records.dump(2).c_str());
  return 0;
}

}  // namespace proxyattn::tool
