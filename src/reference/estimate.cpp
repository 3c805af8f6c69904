// Reference estimator, stages 1-3, written as docs/method.md states them.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/backends.hpp"
#include "core/rules.hpp"
#include "core/tensor_access.hpp"
#include "reference/reference.hpp"

namespace proxyattn::detail::reference {
namespace {

// Mean over heads [h0, h0 + count) of row `token`, in double.
std::vector<double> head_mean(const TensorView& t, std::int64_t token, int h0, int count) {
  const std::int64_t dim = t.shape[2];
  std::vector<double> mean(dim, 0.0);
  for (int h = h0; h < h0 + count; ++h)
    for (std::int64_t d = 0; d < dim; ++d) mean[d] += load(t, token, h, d);
  for (double& x : mean) x /= count;
  return mean;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Softmax of `scores` in place; NaN propagates.
void softmax(std::vector<double>& scores) {
  double mx = -INFINITY;
  for (double x : scores)
    if (x > mx) mx = x;
  double sum = 0;
  for (double& x : scores) sum += (x = std::exp(x - mx));
  for (double& x : scores) x /= sum;
}

}  // namespace

std::vector<double> proxy_block_scores(const TensorView& q, const TensorView& k, Seq seq, int group,
                                       int groups, int stride, int block, double scale) {
  const int hq = static_cast<int>(q.shape[1]) / groups, hkv = static_cast<int>(k.shape[1]) / groups;
  const std::int64_t keys = seq.keys(), offset = seq.offset();
  const std::int64_t nb = (keys + block - 1) / block;
  const std::int64_t na = (keys + stride - 1) / stride;  // strided positions a * stride
  std::vector<std::vector<double>> qbar(na), kbar(na);
  for (std::int64_t a = 0; a < na; ++a) {
    if (a * stride >= offset) qbar[a] = head_mean(q, seq.begin + a * stride - offset, group * hq, hq);
    kbar[a] = head_mean(k, seq.key_token(a * stride), group * hkv, hkv);
  }
  std::vector<double> A(nb * nb, 0.0);
  for (std::int64_t a = 0; a < na; ++a) {
    if (a * stride < offset) continue;  // a position before the queries: a key only
    std::vector<double> p(a + 1);
    for (std::int64_t b = 0; b <= a; ++b) p[b] = scale * dot(qbar[a], kbar[b]);
    softmax(p);
    const std::int64_t m = a * stride / block;
    for (std::int64_t b = 0; b <= a; ++b) {
      double& cell = A[m * nb + b * stride / block];
      if (p[b] > cell) cell = p[b];  // MAX pooling; NaN never enters
    }
  }
  return A;
}

std::vector<double> head_block_mass(const TensorView& q, const TensorView& k, Seq seq, int head,
                                    int gqa_ratio, int block, double scale) {
  const std::int64_t keys = seq.keys(), offset = seq.offset();
  const std::int64_t nb = (keys + block - 1) / block;
  const std::int64_t rows = std::min<std::int64_t>(block, seq.len);
  std::vector<double> mass(nb, 0.0);
  const int kvh = head / gqa_ratio;
  for (std::int64_t i = keys - rows; i < keys; ++i) {  // positions of the last `rows` queries
    const std::vector<double> qi = head_mean(q, seq.begin + i - offset, head, 1);
    std::vector<double> p(i + 1);
    for (std::int64_t t = 0; t <= i; ++t) p[t] = scale * dot(qi, head_mean(k, seq.key_token(t), kvh, 1));
    softmax(p);
    for (std::int64_t t = 0; t <= i; ++t) mass[t / block] += p[t] / rows;
  }
  return mass;
}

std::int64_t budget_blocks(const std::vector<double>& mass, double gamma) {
  std::vector<double> sorted(mass);
  std::sort(sorted.begin(), sorted.end(), [](double a, double b) { return rules::rank_key(a) > rules::rank_key(b); });
  std::vector<double> prefix(sorted.size());
  std::partial_sum(sorted.begin(), sorted.end(), prefix.begin());
  return rules::budget_from_sorted_prefix([&](std::int64_t i) { return prefix[i]; },
                                          static_cast<std::int64_t>(sorted.size()), gamma);
}

std::int64_t row_mass_budget(const std::vector<double>& mass, const std::vector<std::int32_t>& order, std::int64_t m,
                             double gamma) {
  return rules::prefix_budget<double>([&](std::int64_t i) { return order[i]; }, [&](std::int64_t i) { return mass[order[i]]; },
                                      static_cast<std::int64_t>(order.size()), m, gamma);
}

std::vector<std::int32_t> mass_order(const std::vector<double>& mass) {
  std::vector<std::int32_t> order(mass.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    return rules::rank_key(mass[a]) > rules::rank_key(mass[b]);
  });
  return order;
}

std::vector<std::int32_t> preferred_blocks(const std::vector<std::int32_t>& order, std::int64_t k_h,
                                           std::int64_t m, std::int64_t nb, bool exact_last_block,
                                           int head_columns) {
  if (exact_last_block && m == nb - 1) return order;
  const std::int64_t columns = std::min<std::int64_t>(head_columns, k_h);
  return std::vector<std::int32_t>(order.begin(), order.begin() + columns);
}

std::vector<std::int32_t> select_blocks(const double* scores, std::int64_t m, std::int64_t count,
                                        bool keep_sink, const std::vector<std::int32_t>& preferred) {
  std::vector<char> taken(m + 1, 0);
  std::vector<std::int32_t> kept;
  auto take = [&](std::int32_t n) {
    if (n > m || taken[n] || static_cast<std::int64_t>(kept.size()) >= count) return;
    taken[n] = 1;
    kept.push_back(n);
  };
  take(static_cast<std::int32_t>(m));
  if (keep_sink) take(0);
  for (std::int32_t n : preferred) take(n);
  std::vector<std::int32_t> rest;
  for (std::int64_t n = 0; n <= m; ++n)
    if (!taken[n]) rest.push_back(static_cast<std::int32_t>(n));
  std::stable_sort(rest.begin(), rest.end(), [&](std::int32_t a, std::int32_t b) {
    return rules::rank_key(scores[a]) > rules::rank_key(scores[b]);
  });
  for (std::int32_t n : rest) take(n);
  std::sort(kept.begin(), kept.end());
  return kept;
}

void estimate(const Plan::Impl& p, const TensorView& q, const TensorView& k, EstimateOut out) {
  const Config& c = p.config;
  const int heads = p.problem.q_heads, groups = c.proxy_groups, per_group = p.group_size_q();
  const std::int64_t min_blocks = rules::ceil_div(c.min_budget_tokens, c.block_size);
  std::int64_t row = 0;
  out.row_offsets[0] = 0;
  for (int s = 0; s < p.problem.num_seqs(); ++s) {
    const Seq seq{p.seq_begin(s), p.seq_len(s), p.kv_begin(s), p.kv_len(s),
                  p.block_table ? p.block_table + s * p.table_stride : nullptr, p.problem.page_size};
    const std::int64_t nb = p.kv_blocks(s), first = p.first_block(s), end = first + p.seq_blocks(s);
    std::vector<std::vector<double>> A(groups);
    for (int j = 0; j < groups; ++j)
      A[j] = proxy_block_scores(q, k, seq, j, groups, c.stride, c.block_size, p.scale);
    std::vector<std::int64_t> k_h(heads), k_last(heads);
    const double last_cut = rules::last_block_cut(c.gamma, c.last_block_gamma);
    std::vector<std::vector<std::int32_t>> order(heads);
    std::vector<std::vector<double>> mass(heads);
    for (int h = 0; h < heads; ++h) {
      mass[h] = head_block_mass(q, k, seq, h, p.gqa_ratio(), c.block_size, p.scale);
      k_h[h] = seq.len ? budget_blocks(mass[h], c.gamma) : 0;  // no query, no row: no budget
      k_last[h] = seq.len ? budget_blocks(mass[h], last_cut) : 0;
      order[h] = mass_order(mass[h]);
      out.budget_blocks[s * heads + h] = static_cast<std::int32_t>(k_h[h]);
      out.kept_blocks[s * heads + h] = 0;
    }
    for (std::int64_t m = first; m < end; ++m)  // the blocks that hold the sequence's queries
      for (int h = 0; h < heads; ++h, ++row) {
        const std::int64_t base = rules::row_base(k_h[h], k_last[h], m, nb, c.budget_mode, [&](std::int64_t r) {
          return row_mass_budget(mass[h], order[h], r, c.gamma);
        });
        const std::int64_t count = rules::row_budget(base, m, nb, min_blocks, c.keep_sink, c.budget_mode);
        const auto kept =
            select_blocks(&A[h / per_group][m * nb], m, count, c.keep_sink,
                          preferred_blocks(order[h], k_h[h], m, nb, c.exact_last_block, c.head_columns));
        std::copy(kept.begin(), kept.end(), out.col_indices + out.row_offsets[row]);
        out.row_offsets[row + 1] = out.row_offsets[row] + static_cast<std::int64_t>(kept.size());
        out.kept_blocks[s * heads + h] += static_cast<std::int64_t>(kept.size());
      }
  }
}

}  // namespace proxyattn::detail::reference
