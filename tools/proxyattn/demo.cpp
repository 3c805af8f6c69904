// demo: ProxyAttn on the embedded structured input (synthetic.hpp), with the accuracy and the
// time of every stage against dense attention, and a plain reading of the result.
#include <algorithm>
#include <cstdio>
#include <string>

#include "commands.hpp"
#include "png.hpp"
#include "synthetic.hpp"

namespace proxyattn::tool {

namespace {

// The masks of the query heads of kv head g side by side, one panel per head: kept blocks black,
// causal blocks left out light grey, blocks above the diagonal white; each block a square of
// pixels, so that a panel is at least 256 pixels wide.
void draw_masks(const std::string& path, const HostEstimate& e, const Problem& p, int block_size, int g) {
  const int ratio = p.q_heads / p.kv_heads;
  const std::int64_t nb = (p.cu_seqlens[1] + block_size - 1) / block_size;
  const int px = static_cast<int>(std::max<std::int64_t>(1, (256 + nb - 1) / nb)), gap = 8;
  const int side = static_cast<int>(nb) * px, width = ratio * side + (ratio - 1) * gap;
  std::vector<std::uint8_t> img(static_cast<std::size_t>(width) * side, 255);
  for (int i = 0; i < ratio; ++i) {
    const int h = g * ratio + i, x0 = i * (side + gap);
    for (std::int64_t m = 0; m < nb; ++m) {
      const std::int64_t row = m * p.q_heads + h;
      std::vector<char> kept(nb, 0);
      for (std::int64_t k = e.mask.row_offsets[row]; k < e.mask.row_offsets[row + 1]; ++k) kept[e.mask.col_indices[k]] = 1;
      for (std::int64_t n = 0; n <= m; ++n)
        for (int dy = 0; dy < px; ++dy)
          for (int dx = 0; dx < px; ++dx)
            img[(m * px + dy) * width + x0 + n * px + dx] = kept[n] ? 0 : 215;
    }
  }
  write_png(path, width, side, img);
}

}  // namespace

int run_demo(DemoOptions& o) {
  finish_options(o.common);
  if (o.q_heads % o.kv_heads != 0)
    throw UsageError("--q-heads (" + std::to_string(o.q_heads) + ") must be a multiple of --kv-heads (" +
                     std::to_string(o.kv_heads) + ")");
  if (o.head_dim % 2 != 0) throw UsageError("--head-dim must be even, got " + std::to_string(o.head_dim));
  if (o.png_kv_head >= o.kv_heads)
    throw UsageError("--png-kv-head must be below --kv-heads (" + std::to_string(o.kv_heads) + "), got " +
                     std::to_string(o.png_kv_head));
  const Device dev = resolve_device(o.common.device);
  if (o.tokens == 0) o.tokens = dev == Device::cuda ? 32768 : 8192;
  Problem p = Problem::single(o.tokens, o.q_heads, o.kv_heads, o.head_dim, parse_dtype(o.common.dtype), dev);
  if (dev == Device::cuda && p.dtype == DType::float32) throw UsageError("--dtype fp32 runs on the CPU only");
  SyntheticSpec spec;
  spec.tokens = o.tokens;
  spec.q_heads = o.q_heads;
  spec.kv_heads = o.kv_heads;
  spec.head_dim = o.head_dim;
  spec.seed = o.seed;
  std::fprintf(stderr, "proxyattn demo: %lld tokens on the %s\n", static_cast<long long>(o.tokens),
               dev == Device::cuda ? "GPU" : "CPU");
  Progress make("the embedded input");
  const SyntheticQkv x = make_structured_qkv(spec);
  DeviceTensors t = upload(p, x.q.data(), x.k.data(), x.v.data());
  Plan plan(o.common.config, p);
  make.done();
  const Measurement m = measure(plan, t, default_repeat(dev, o.common.repeat));
  report(plan, m, o.common.json,
         "proxyattn demo: embedded structured input (sinks, local windows, " + std::to_string(x.retrieval_tokens.size()) +
             " retrieval tokens sought by heads 1, 5, 9, ..., heads of different sparsity)",
         [](int h) {
           return is_retrieval_head(h)
                      ? std::string("They seek the planted retrieval tokens, which the other heads of their group "
                                    "ignore: the group's shared proxy ranks those blocks low, and the heads' own "
                                    "columns (head_columns) and the exact last block bring most of them back.")
                      : std::string();
         });
  if (!o.png.empty()) {
    draw_masks(o.png, m.estimate, p, o.common.config.block_size, o.png_kv_head);
    if (!o.common.json)
      std::printf("\nwrote %s: the masks of query heads %d-%d (kv head %d); black kept, grey left out\n", o.png.c_str(),
                  o.png_kv_head * (o.q_heads / o.kv_heads), (o.png_kv_head + 1) * (o.q_heads / o.kv_heads) - 1,
                  o.png_kv_head);
  }
  return 0;
}

}  // namespace proxyattn::tool
