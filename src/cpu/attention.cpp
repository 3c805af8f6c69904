// Fast CPU attention: flash-attention over the kept key blocks of each (sequence, query block,
// head), fp32 accumulation, threads over work items (longest first), vectorised tiles.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/backends.hpp"
#include "cpu/kernels.hpp"

namespace proxyattn::detail::cpu {
namespace {

struct Item {
  int seq;
  int head;
  std::int64_t m;     // query block in its sequence
  std::int64_t work;  // kept key blocks, for ordering
};

// Per-thread tiles, padded so that every row is a whole number of vectors.
struct Scratch {
  std::int64_t dp, bp;  // padded head dim and block size
  std::vector<float> q, kt, v, s, o, row_max, row_sum;
  Scratch(std::int64_t block, std::int64_t dim)
      : dp(round_up(dim, kLanes)), bp(round_up(block, kLanes)),
        q(block * dp, 0.f), kt(dim * bp, 0.f), v(bp * dp, 0.f), s(block * bp), o(block * dp),
        row_max(block), row_sum(block) {}
};

void run_item(const Plan::Impl& p, const Item& it, const TensorView& q, const TensorView& k, const TensorView& v,
              const BlockMask* mask, const TensorView& out, float* lse, Scratch& w) {
  const std::int64_t B = p.config.block_size, D = p.problem.head_dim, total = p.problem.total_tokens();
  const std::int64_t begin = p.seq_begin(it.seq), len = p.seq_len(it.seq);
  const std::int64_t q0 = it.m * B, rows = std::min(B, len - q0);
  const int kvh = it.head / p.gqa_ratio();
  const float qmul = p.scale * kLog2e;  // scores in base 2: exp2 is the cheap exponential

  for (std::int64_t i = 0; i < rows; ++i) load_row(q, begin + q0 + i, it.head, &w.q[i * w.dp], qmul);
  std::fill(w.o.begin(), w.o.begin() + rows * w.dp, 0.f);
  std::fill(w.row_max.begin(), w.row_max.begin() + rows, -INFINITY);
  std::fill(w.row_sum.begin(), w.row_sum.begin() + rows, 0.f);

  const std::int64_t row = (p.block_offset[it.seq] + it.m) * p.problem.q_heads + it.head;
  const std::int64_t lo = mask ? mask->row_offsets[row] : 0;
  const std::int64_t hi = mask ? mask->row_offsets[row + 1] : it.m + 1;
  std::vector<float> row_d(D);
  for (std::int64_t e = lo; e < hi; ++e) {
    const std::int64_t n = mask ? mask->col_indices[e] : e;
    const std::int64_t k0 = n * B, keys = std::min(B, len - k0);
    const std::int64_t cols = round_up(keys, kLanes);
    // K transposed into [D][cols] (padding columns zero), V into [keys][dp].
    for (std::int64_t j = 0; j < keys; ++j) {
      load_row(k, begin + k0 + j, kvh, row_d.data(), 1.f);
      for (std::int64_t d = 0; d < D; ++d) w.kt[d * w.bp + j] = row_d[d];
      load_row(v, begin + k0 + j, kvh, &w.v[j * w.dp], 1.f);
    }
    for (std::int64_t j = keys; j < cols; ++j) {
      for (std::int64_t d = 0; d < D; ++d) w.kt[d * w.bp + j] = 0.f;
      std::fill(&w.v[j * w.dp], &w.v[j * w.dp] + w.dp, 0.f);
    }
    gemm(w.q.data(), w.dp, w.kt.data(), w.bp, w.s.data(), w.bp, rows, cols, D, false);

    for (std::int64_t i = 0; i < rows; ++i) {
      float* s = &w.s[i * w.bp];
      // Keys past the query (diagonal block) or past the sequence (padding) do not exist.
      const std::int64_t visible = std::min(keys, q0 + i - k0 + 1);
      for (std::int64_t j = std::max<std::int64_t>(visible, 0); j < cols; ++j) s[j] = -INFINITY;
      float mx = w.row_max[i];
      for (std::int64_t j = 0; j < cols; ++j) mx = s[j] > mx ? s[j] : mx;
      // A row that has seen no key yet keeps max -inf: subtract 0 so that exp2 gives 0, not NaN.
      const float base = mx == -INFINITY ? 0.f : mx;
      const float rescale = exp2s(w.row_max[i] - base);
      vf sum = vf{};
      for (std::int64_t j = 0; j < cols; j += kLanes) {
        const vf pj = exp2v(loadv(s + j) - base);
        storev(s + j, pj);
        sum += pj;
      }
      float total_sum = 0.f;
      for (int l = 0; l < kLanes; ++l) total_sum += sum[l];
      w.row_sum[i] = w.row_sum[i] * rescale + total_sum;
      w.row_max[i] = mx;
      if (rescale != 1.f) {
        float* o = &w.o[i * w.dp];
        for (std::int64_t d = 0; d < w.dp; ++d) o[d] *= rescale;
      }
    }
    gemm(w.s.data(), w.bp, w.v.data(), w.dp, w.o.data(), w.dp, rows, w.dp, cols, true);
  }

  for (std::int64_t i = 0; i < rows; ++i) {
    const float l = w.row_sum[i];
    const bool empty = w.row_max[i] == -INFINITY;  // no visible key at all
    store_row(out, begin + q0 + i, it.head, &w.o[i * w.dp], empty ? 0.f : 1.f / l);
    if (lse) lse[it.head * total + begin + q0 + i] = empty ? -INFINITY : (w.row_max[i] + std::log2(l)) * kLn2;
  }
}

}  // namespace

void attention(const Plan::Impl& p, const TensorView& q, const TensorView& k, const TensorView& v,
               const BlockMask* mask, const TensorView& out, const TensorView& lse) {
  std::vector<Item> items;
  items.reserve(p.mask_rows);
  for (int s = 0; s < p.problem.num_seqs(); ++s)
    for (std::int64_t m = 0; m < p.seq_blocks(s); ++m)
      for (int h = 0; h < p.problem.q_heads; ++h) {
        const std::int64_t row = (p.block_offset[s] + m) * p.problem.q_heads + h;
        const std::int64_t work = mask ? mask->row_offsets[row + 1] - mask->row_offsets[row] : m + 1;
        items.push_back({s, h, m, work});
      }
  // Longest first, so that the long rows do not end up alone at the tail of the schedule.
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.work > b.work; });
  float* lse_out = lse.defined() ? lse.as<float>() : nullptr;
  const std::int64_t n = static_cast<std::int64_t>(items.size());
#pragma omp parallel
  {
    Scratch w(p.config.block_size, p.problem.head_dim);
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t i = 0; i < n; ++i) run_item(p, items[i], q, k, v, mask, out, lse_out, w);
  }
}

}  // namespace proxyattn::detail::cpu
