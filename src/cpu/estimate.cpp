// Fast CPU estimator. Stage 2 first (per head), then the row budgets and CSR offsets, then
// stages 1 and 3 fused per (sequence, group, query block): the proxy scores of one query block
// are computed, pooled to block maxima, ranked and written out at once, so that no memory of
// size (N/s)^2 or Nb^2 is ever held.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/backends.hpp"
#include "core/rules.hpp"
#include "cpu/rows.hpp"
#include "cpu/simd.hpp"

namespace proxyattn::detail::cpu {
namespace {

// Stage 2 for one head: block masses of the last min(B, queries) queries, in two passes over the
// keys (row max and sum first, then the normalised block sums), O(B * N / B) memory. Positions
// are the keys' (the queries are the last of them); `first` is the first of the L queries.
std::vector<double> head_mass(const Plan::Impl& p, const TensorView& q, const TensorView& k, int s, int h) {
  const Kernels& K = kernels();
  const std::int64_t B = p.config.block_size, D = p.problem.head_dim;
  const std::int64_t len = p.kv_len(s), nb = p.kv_blocks(s);
  const std::int64_t L = std::min(B, p.seq_len(s)), first = len - L;
  const std::int64_t q_first = p.seq_begin(s) + p.seq_len(s) - L;  // its token in q
  const std::int64_t dp = row_stride(D), bp = row_stride(B);
  const int kvh = h / p.gqa_ratio();
  std::vector<float> qt(L * dp, 0.f), kt(D * bp, 0.f), sc(L * bp), row(D);
  std::vector<float> mx(L, -INFINITY), sum(L, 0.f);
  std::vector<double> mass(nb, 0.0);
  for (std::int64_t i = 0; i < L; ++i) load_row(q, q_first + i, h, &qt[i * dp], p.scale * kLog2e);

  auto scores = [&](std::int64_t n, std::int64_t& keys) {
    const std::int64_t k0 = n * B;
    keys = std::min(B, len - k0);
    const std::int64_t cols = round_up(keys, kPad);
    for (std::int64_t j = 0; j < cols; ++j) {
      if (j < keys) load_row(k, p.kv_token(s, k0 + j), kvh, row.data(), 1.f);
      for (std::int64_t d = 0; d < D; ++d) kt[d * bp + j] = j < keys ? row[d] : 0.f;
    }
    K.gemm(qt.data(), dp, kt.data(), bp, sc.data(), bp, L, cols, D, false);
    for (std::int64_t i = 0; i < L; ++i)  // causal: key k0 + j visible to query first + i
      for (std::int64_t j = std::max<std::int64_t>(0, std::min(keys, first + i - k0 + 1)); j < cols; ++j)
        sc[i * bp + j] = -INFINITY;
    return cols;
  };
  std::int64_t keys = 0;
  const std::int64_t last_block = (len - 1) / B;  // key blocks past it are not visible to anyone
  for (std::int64_t n = 0; n <= last_block; ++n) {
    const std::int64_t cols = scores(n, keys);
    for (std::int64_t i = 0; i < L; ++i) {
      const float* srow = &sc[i * bp];
      float m = mx[i];
      m = K.row_max(srow, cols, m);
      const float base = m == -INFINITY ? 0.f : m;
      sum[i] = sum[i] * std::exp2(mx[i] - base) + K.exp2_sum(srow, nullptr, cols, base);
      mx[i] = m;
    }
  }
  for (std::int64_t n = 0; n <= last_block; ++n) {
    const std::int64_t cols = scores(n, keys);
    double block = 0.0;
    for (std::int64_t i = 0; i < L; ++i) {
      const float* srow = &sc[i * bp];
      const float base = mx[i] == -INFINITY ? 0.f : mx[i];
      block += static_cast<double>(K.exp2_sum(srow, nullptr, cols, base)) / sum[i];
    }
    mass[n] = block / static_cast<double>(L);
  }
  return mass;
}

// k_h from the masses (and the last query block's count at last_gamma), and the head's own ranking
// of the blocks (mass descending, ties to the lower index, NaN last): what exact_last_block and
// head_columns prefer.
std::int64_t budget(const std::vector<double>& mass, double gamma, double last_gamma, std::vector<std::int32_t>& order,
                    std::int64_t& last) {
  order.resize(mass.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    return rules::rank_key(mass[a]) > rules::rank_key(mass[b]);
  });
  std::vector<double> prefix(mass.size());
  double run = 0.0;
  for (std::size_t i = 0; i < order.size(); ++i) prefix[i] = run += mass[order[i]];
  auto count = [&](double g) {
    return rules::budget_from_sorted_prefix([&](std::int64_t i) { return prefix[i]; },
                                            static_cast<std::int64_t>(prefix.size()), g);
  };
  last = count(last_gamma);
  return count(gamma);
}

// The proxy heads of one (sequence, group) at the strided positions a * stride of the keys:
// queries scaled for base 2 (zero before the first query, a0 = the first strided query), keys
// transposed to [D][na_padded] so that a score row is one matrix product.
struct Proxy {
  std::int64_t na = 0, nap = 0, dp = 0, a0 = 0;
  std::vector<float> q, kt;
};

Proxy make_proxy(const Plan::Impl& p, const TensorView& q, const TensorView& k, int s, int j) {
  const std::int64_t D = p.problem.head_dim, stride = p.config.stride;
  const std::int64_t len = p.kv_len(s), offset = p.q_offset(s);
  const int gq = p.group_size_q(), gk = p.group_size_kv();
  Proxy x;
  x.na = (len + stride - 1) / stride;
  x.a0 = (offset + stride - 1) / stride;
  x.nap = row_stride(x.na);
  x.dp = row_stride(D);
  x.q.assign(x.na * x.dp, 0.f);
  x.kt.assign(D * x.nap, 0.f);
  std::vector<float> row(D), acc(D);
  for (std::int64_t a = 0; a < x.na; ++a) {
    const std::int64_t t = p.kv_token(s, a * stride);
    if (a >= x.a0) {
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int h = j * gq; h < (j + 1) * gq; ++h) {
        load_row(q, p.seq_begin(s) + a * stride - offset, h, row.data(), 1.f);
        for (std::int64_t d = 0; d < D; ++d) acc[d] += row[d];
      }
      for (std::int64_t d = 0; d < D; ++d) x.q[a * x.dp + d] = acc[d] / gq * p.scale * kLog2e;
    }
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int h = j * gk; h < (j + 1) * gk; ++h) {
      load_row(k, t, h, row.data(), 1.f);
      for (std::int64_t d = 0; d < D; ++d) acc[d] += row[d];
    }
    for (std::int64_t d = 0; d < D; ++d) x.kt[d * x.nap + a] = acc[d] / gk;
  }
  return x;
}

// Stage 1 for query block m: A[n] = max over its strided queries a and the strided keys b of
// block n of softmax_b(score(a, b)), computed as exp2(max(score - lse)) in base 2. A block with
// no strided query (the start of a chunk) scores 0 everywhere.
void proxy_row(const Plan::Impl& p, const Proxy& x, std::int64_t m, std::vector<float>& sc,
               std::vector<float>& A) {
  const Kernels& K = kernels();
  const std::int64_t per_block = p.config.block_size / p.config.stride;
  const std::int64_t a0 = std::max(m * per_block, x.a0), a1 = std::min(x.na, (m + 1) * per_block);
  std::fill(A.begin(), A.begin() + m + 1, -INFINITY);
  const std::int64_t cols = round_up(a1, kPad);
  const std::int64_t rows = std::max<std::int64_t>(0, a1 - a0);
  sc.resize(rows * cols);
  if (rows > 0)
    K.gemm(&x.q[a0 * x.dp], x.dp, x.kt.data(), x.nap, sc.data(), cols, rows, cols, p.problem.head_dim, false);
  for (std::int64_t r = 0; r < rows; ++r) {
    float* s = &sc[r * cols];
    const std::int64_t a = a0 + r;
    for (std::int64_t b = a + 1; b < cols; ++b) s[b] = -INFINITY;
    const float mx = K.row_max(s, cols, -INFINITY);  // keys past a are -inf
    const float base = mx == -INFINITY ? 0.f : mx;
    const float total = K.exp2_sum(s, nullptr, cols, base);
    const float lse = base + std::log2(total);
    for (std::int64_t b = 0; b <= a; ++b) {
      const float v = s[b] - lse;
      float& cell = A[b / per_block];
      cell = v > cell ? v : cell;  // NaN never enters
    }
  }
  for (std::int64_t n = 0; n <= m; ++n) A[n] = A[n] == -INFINITY ? 0.f : std::exp2(A[n]);
}

}  // namespace

void estimate(const Plan::Impl& p, const TensorView& q, const TensorView& k, EstimateOut out) {
  const Config& c = p.config;
  const int heads = p.problem.q_heads, seqs = p.problem.num_seqs(), groups = c.proxy_groups;
  const int per_group = p.group_size_q();

  // Stage 2, one task per (sequence, head); row_mass keeps the masses for the row counts.
  const bool row_mass = c.budget_mode == BudgetMode::row_mass;
  std::vector<std::vector<std::int32_t>> order(static_cast<std::size_t>(seqs) * heads);
  std::vector<std::vector<double>> masses(row_mass ? static_cast<std::size_t>(seqs) * heads : 0);
  std::vector<std::int64_t> k_last(static_cast<std::size_t>(seqs) * heads, 0);
  const double last_cut = rules::last_block_cut(c.gamma, c.last_block_gamma);
#pragma omp parallel for schedule(dynamic, 1)
  for (std::int64_t t = 0; t < static_cast<std::int64_t>(seqs) * heads; ++t) {
    const int s = static_cast<int>(t / heads), h = static_cast<int>(t % heads);
    if (!p.seq_len(s)) {  // no query, no row: no budget
      out.budget_blocks[t] = 0;
      continue;
    }
    std::vector<double> mass = head_mass(p, q, k, s, h);
    out.budget_blocks[t] = static_cast<std::int32_t>(budget(mass, c.gamma, last_cut, order[t], k_last[t]));
    if (row_mass) masses[t] = std::move(mass);
  }

  // Row budgets and CSR offsets: integers only, in row order.
  const std::int64_t min_blocks = rules::ceil_div(c.min_budget_tokens, c.block_size);
  out.row_offsets[0] = 0;
  for (int s = 0; s < seqs; ++s) {
    const std::int64_t nb = p.kv_blocks(s), first = p.first_block(s);
    for (int h = 0; h < heads; ++h) out.kept_blocks[s * heads + h] = 0;
    for (std::int64_t m = first; m < first + p.seq_blocks(s); ++m)  // absolute block indices
      for (int h = 0; h < heads; ++h) {
        const std::int64_t row = (p.block_offset[s] + m - first) * heads + h;
        const std::int64_t t = static_cast<std::int64_t>(s) * heads + h;
        const std::int64_t base =
            rules::row_base(out.budget_blocks[t], k_last[t], m, nb, c.budget_mode, [&](std::int64_t r) {
              return rules::prefix_budget<double>([&](std::int64_t i) { return order[t][i]; },
                                                  [&](std::int64_t i) { return masses[t][order[t][i]]; }, nb, r, c.gamma);
            });
        const std::int64_t count = rules::row_budget(base, m, nb, min_blocks, c.keep_sink, c.budget_mode);
        out.row_offsets[row + 1] = out.row_offsets[row] + count;
        out.kept_blocks[s * heads + h] += count;
      }
  }

  // Stages 1 and 3, one task per (sequence, group, query block), the proxies built per
  // (sequence, group) first.
  for (int s = 0; s < seqs; ++s) {
    const std::int64_t nb = p.kv_blocks(s), first = p.first_block(s), rows = p.seq_blocks(s);
    if (rows == 0) continue;
    std::vector<Proxy> proxies(groups);
#pragma omp parallel for schedule(dynamic, 1)
    for (int j = 0; j < groups; ++j) proxies[j] = make_proxy(p, q, k, s, j);
#pragma omp parallel
    {
      std::vector<float> sc, A(nb);
      std::vector<std::int32_t> ranked, kept;
      std::vector<char> taken(nb, 0);
#pragma omp for schedule(dynamic, 1)
      for (std::int64_t task = groups * rows - 1; task >= 0; --task) {  // long rows first
        const int j = static_cast<int>(task / rows);
        const std::int64_t m = first + task % rows;
        const bool exact = c.exact_last_block && m == nb - 1;  // every head ranks by its own masses
        if (!exact) proxy_row(p, proxies[j], m, sc, A);
        // Rank the unforced blocks once for the group (score descending, index ascending), as
        // far as the head that reads furthest needs: its count, and its columns skipped over.
        ranked.clear();
        for (std::int64_t n = 0; n < m && !exact; ++n)
          if (!(c.keep_sink && n == 0)) ranked.push_back(static_cast<std::int32_t>(n));
        std::int64_t need = 0;
        for (int h = j * per_group; h < (j + 1) * per_group; ++h) {
          const std::int64_t row = (p.block_offset[s] + m - first) * heads + h;
          need = std::max(need, out.row_offsets[row + 1] - out.row_offsets[row]);
        }
        const std::int64_t forced = rules::forced_blocks(m, c.keep_sink);
        const std::int64_t take =
            std::min<std::int64_t>(need - forced + c.head_columns, static_cast<std::int64_t>(ranked.size()));
        std::partial_sort(ranked.begin(), ranked.begin() + std::max<std::int64_t>(take, 0), ranked.end(),
                          [&](std::int32_t a, std::int32_t b) {
                            const float ka = rules::rank_key(A[a]), kb = rules::rank_key(A[b]);
                            return ka > kb || (ka == kb && a < b);
                          });
        for (int h = j * per_group; h < (j + 1) * per_group; ++h) {
          const std::int64_t row = (p.block_offset[s] + m - first) * heads + h;
          const std::int64_t count = out.row_offsets[row + 1] - out.row_offsets[row];
          const std::vector<std::int32_t>& own = order[static_cast<std::size_t>(s) * heads + h];
          kept.clear();
          auto keep = [&](std::int32_t n) {
            if (n > m || taken[n] || static_cast<std::int64_t>(kept.size()) >= count) return;
            taken[n] = 1;
            kept.push_back(n);
          };
          keep(static_cast<std::int32_t>(m));
          if (c.keep_sink) keep(0);
          const std::int64_t columns =
              exact ? nb : std::min<std::int64_t>(c.head_columns, out.budget_blocks[s * heads + h]);
          for (std::int64_t i = 0; i < columns; ++i) keep(own[i]);
          for (std::int64_t i = 0; i < take; ++i) keep(ranked[i]);
          for (std::int32_t n : kept) taken[n] = 0;
          std::sort(kept.begin(), kept.end());
          std::copy(kept.begin(), kept.end(), out.col_indices + out.row_offsets[row]);
        }
      }
    }
  }
}

}  // namespace proxyattn::detail::cpu
