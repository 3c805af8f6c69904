// Fast CPU attention: flash-attention over the kept key blocks of each (sequence, query block,
// head), fp32 accumulation, threads over work items (longest first), the vector kernels of
// simd.hpp. Keys and values are converted to fp32 once per (sequence, kv head, key block), keys
// transposed, so that the query heads of a kv group and every query block share them.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/backends.hpp"
#include "cpu/rows.hpp"
#include "cpu/simd.hpp"

namespace proxyattn::detail::cpu {
namespace {

struct Item {
  int seq;
  int head;
  std::int64_t r;     // mask row (query block) of its sequence: block first_block(seq) + r
  std::int64_t work;  // kept key blocks, for ordering
};

// K transposed ([D][bp] per block) and V ([bp][dp] per block) of every (global key block, kv head),
// fp32, padding zero.
struct Packed {
  std::int64_t D, dp, bp, heads;  // head dim; row strides of V and of K transposed (simd.hpp)
  std::int64_t dcols;             // the head dim in whole vectors: the width of the output tiles
  std::vector<float> kt, v;
  const float* kt_block(std::int64_t b, int h) const { return &kt[(b * heads + h) * D * bp]; }
  const float* v_block(std::int64_t b, int h) const { return &v[(b * heads + h) * bp * dp]; }
};

Packed pack(const Plan::Impl& p, const TensorView& k, const TensorView& v) {
  const std::int64_t B = p.config.block_size, D = p.problem.head_dim;
  Packed w{D, row_stride(D), row_stride(B), p.problem.kv_heads, round_up(D, kPad), {}, {}};
  const std::int64_t blocks = p.kv_block_offset.back();
  w.kt.assign(blocks * w.heads * D * w.bp, 0.f);
  w.v.assign(blocks * w.heads * w.bp * w.dp, 0.f);
  std::vector<int> seq_of(blocks);
  for (int s = 0; s < p.problem.num_seqs(); ++s)
    for (std::int64_t b = p.kv_block_offset[s]; b < p.kv_block_offset[s + 1]; ++b) seq_of[b] = s;
#pragma omp parallel
  {
    std::vector<float> row(D);
#pragma omp for schedule(static)
    for (std::int64_t t = 0; t < blocks * w.heads; ++t) {
      const std::int64_t b = t / w.heads;
      const int h = static_cast<int>(t % w.heads), s = seq_of[b];
      const std::int64_t k0 = (b - p.kv_block_offset[s]) * B, keys = std::min(B, p.kv_len(s) - k0);
      float* kt = &w.kt[t * D * w.bp];
      float* vv = &w.v[t * w.bp * w.dp];
      for (std::int64_t j = 0; j < keys; ++j) {
        const std::int64_t token = p.kv_token(s, k0 + j);
        load_row(k, token, h, row.data(), 1.f);
        for (std::int64_t d = 0; d < D; ++d) kt[d * w.bp + j] = row[d];
        load_row(v, token, h, &vv[j * w.dp], 1.f);
      }
    }
  }
  return w;
}

// Per-thread tiles, padded so that every row is a whole number of vectors.
struct Scratch {
  std::vector<float> q, s, o, row_max, row_sum;
  Scratch(std::int64_t block, const Packed& w)
      : q(block * w.dp, 0.f), s(block * w.bp), o(block * w.dp), row_max(block), row_sum(block) {}
};

bool all_finite(const float* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

void run_item(const Plan::Impl& p, const Kernels& K, const Packed& w, const Item& it, const TensorView& q,
              const BlockMask* mask, const TensorView& out, float* lse, Scratch& sc) {
  const std::int64_t B = p.config.block_size, total = p.problem.total_tokens();
  // Positions are the keys'; the block's queries are positions q0 .. q0 + rows - 1, the first
  // of them token `first` of q (a chunk may start inside the block).
  const std::int64_t len = p.kv_len(it.seq), m = p.first_block(it.seq) + it.r;
  const std::int64_t q0 = std::max(m * B, p.q_offset(it.seq)), rows = std::min((m + 1) * B, len) - q0;
  const std::int64_t first = p.seq_begin(it.seq) + q0 - p.q_offset(it.seq);
  const int kvh = it.head / p.gqa_ratio();
  const float qmul = p.scale * kLog2e;  // scores in base 2: exp2 is the cheap exponential

  for (std::int64_t i = 0; i < rows; ++i) load_row(q, first + i, it.head, &sc.q[i * w.dp], qmul);
  std::fill(sc.o.begin(), sc.o.begin() + rows * w.dp, 0.f);
  std::fill(sc.row_max.begin(), sc.row_max.begin() + rows, -INFINITY);
  std::fill(sc.row_sum.begin(), sc.row_sum.begin() + rows, 0.f);

  const std::int64_t row = (p.block_offset[it.seq] + it.r) * p.problem.q_heads + it.head;
  const std::int64_t lo = mask ? mask->row_offsets[row] : 0;
  const std::int64_t hi = mask ? mask->row_offsets[row + 1] : m + 1;
  for (std::int64_t e = lo; e < hi; ++e) {
    const std::int64_t n = mask ? mask->col_indices[e] : e;
    const std::int64_t k0 = n * B, keys = std::min(B, len - k0);
    const std::int64_t cols = round_up(keys, kPad);
    const float* kt = w.kt_block(p.kv_block_offset[it.seq] + n, kvh);
    const float* vb = w.v_block(p.kv_block_offset[it.seq] + n, kvh);
    K.gemm(sc.q.data(), w.dp, kt, w.bp, sc.s.data(), w.bp, rows, cols, w.D, false);

    std::int64_t fewest = keys;  // the fewest keys a row of this block sees
    for (std::int64_t i = 0; i < rows; ++i) {
      float* s = &sc.s[i * w.bp];
      // Keys past the query (diagonal block) or past the sequence (padding) do not exist.
      const std::int64_t visible = std::max<std::int64_t>(0, std::min(keys, q0 + i - k0 + 1));
      fewest = std::min(fewest, visible);
      std::fill(s + visible, s + cols, -INFINITY);
      const float mx = K.row_max(s, cols, sc.row_max[i]);
      // A row that has seen no key yet keeps max -inf: subtract 0 so that exp2 gives 0, not NaN.
      const float base = mx == -INFINITY ? 0.f : mx;
      const float rescale = std::exp2(sc.row_max[i] - base);
      sc.row_sum[i] = sc.row_sum[i] * rescale + K.exp2_sum(s, s, cols, base);
      sc.row_max[i] = mx;
      if (rescale != 1.f) K.scale(&sc.o[i * w.dp], w.dcols, rescale);
    }
    // P V. A key a row cannot see has probability 0, but 0 * NaN is NaN: where such keys hold a
    // non-finite value, each row takes only the keys it sees.
    if (fewest == keys || all_finite(vb + fewest * w.dp, (keys - fewest) * w.dp)) {
      K.gemm(sc.s.data(), w.bp, vb, w.dp, sc.o.data(), w.dp, rows, w.dcols, cols, true);
    } else {
      for (std::int64_t i = 0; i < rows; ++i) {
        const std::int64_t visible = std::max<std::int64_t>(0, std::min(keys, q0 + i - k0 + 1));
        K.gemm(&sc.s[i * w.bp], w.bp, vb, w.dp, &sc.o[i * w.dp], w.dp, 1, w.dcols, visible, true);
      }
    }
  }

  for (std::int64_t i = 0; i < rows; ++i) {
    const float l = sc.row_sum[i];
    const bool empty = sc.row_max[i] == -INFINITY;  // no visible key at all
    store_row(out, first + i, it.head, &sc.o[i * w.dp], empty ? 0.f : 1.f / l);
    if (lse) lse[it.head * total + first + i] = empty ? -INFINITY : (sc.row_max[i] + std::log2(l)) * kLn2;
  }
}

}  // namespace

void attention(const Plan::Impl& p, const TensorView& q, const TensorView& k, const TensorView& v,
               const BlockMask* mask, const TensorView& out, const TensorView& lse) {
  std::vector<Item> items;
  items.reserve(p.mask_rows);
  for (int s = 0; s < p.problem.num_seqs(); ++s)
    for (std::int64_t r = 0; r < p.seq_blocks(s); ++r)
      for (int h = 0; h < p.problem.q_heads; ++h) {
        const std::int64_t row = (p.block_offset[s] + r) * p.problem.q_heads + h;
        const std::int64_t work = mask ? mask->row_offsets[row + 1] - mask->row_offsets[row] : p.first_block(s) + r + 1;
        items.push_back({s, h, r, work});
      }
  // Longest first, so that the long rows do not end up alone at the tail of the schedule.
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.work > b.work; });
  const Packed w = pack(p, k, v);
  const Kernels& K = kernels();
  float* lse_out = lse.defined() ? lse.as<float>() : nullptr;
  const std::int64_t n = static_cast<std::int64_t>(items.size());
#pragma omp parallel
  {
    Scratch sc(p.config.block_size, w);
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t i = 0; i < n; ++i) run_item(p, K, w, items[i], q, mask, out, lse_out, sc);
  }
}

}  // namespace proxyattn::detail::cpu
