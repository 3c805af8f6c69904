// The integer and selection rules of stages 2 and 3, shared by every backend (host and device)
// so that the CPU and the GPU choose exactly the same budgets from the same block masses.
#pragma once

#include <cstdint>

#include "proxyattn/config.hpp"

#if defined(__CUDACC__)
#define PROXYATTN_HD __host__ __device__ __forceinline__
#else
#define PROXYATTN_HD inline
#endif

namespace proxyattn::rules {

PROXYATTN_HD std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

PROXYATTN_HD std::int64_t max64(std::int64_t a, std::int64_t b) { return a > b ? a : b; }
PROXYATTN_HD std::int64_t min64(std::int64_t a, std::int64_t b) { return a < b ? a : b; }

// proxy_groups = 0: one proxy per kv head up to 4 kv heads, since a proxy that averages the keys
// of different kv heads ranks for none of them; beyond 4, one proxy per 4 kv heads (the largest
// divisor of the kv head count not above a quarter of it), so that stage 1, which grows with the
// proxy count, stays near 1% of dense attention (Llama-3.1-8B: 8 kv heads, 2 proxies).
inline int auto_proxy_groups(int kv_heads) {
  if (kv_heads <= 4) return kv_heads;
  int g = kv_heads / 4;
  while (kv_heads % g != 0) --g;
  return g;
}

// Blocks kept whatever the scores say in query block m: the diagonal, and the sink (block 0)
// when it is not the diagonal itself.
PROXYATTN_HD int forced_blocks(std::int64_t m, bool keep_sink) { return keep_sink && m > 0 ? 2 : 1; }

// Stage 3: how many key blocks head h keeps in query block m of a sequence of nb blocks, given
// the head's stage-2 count k_h (for row_mass: the row's own count, prefix_budget below).
// Integers only, so that every backend agrees.
PROXYATTN_HD std::int64_t row_budget(std::int64_t k_h, std::int64_t m, std::int64_t nb,
                                     std::int64_t min_blocks, bool keep_sink, BudgetMode mode) {
  const std::int64_t eligible = m + 1;
  std::int64_t k = mode == BudgetMode::row_ratio ? ceil_div(k_h * eligible, nb) : k_h;
  k = max64(k, min_blocks);
  k = max64(k, forced_blocks(m, keep_sink));
  return min64(k, eligible);
}

// The last query block's cut (Config::last_block_gamma): at least gamma.
PROXYATTN_HD double last_block_cut(double gamma, double last_block_gamma) {
  return last_block_gamma > gamma ? last_block_gamma : gamma;
}

// Stage 2 cut, the one rule of every backend: k_h is the smallest count of the head's largest
// block masses whose sum reaches gamma times the total. gamma >= 1 and a non-finite total (NaN or
// Inf in the inputs) keep every block: the safe side is dense. T is the precision of the sums
// (double on the CPU, float on the GPU).
template <class T>
struct BudgetCut {
  bool keep_all;
  T target;
};

template <class T>
PROXYATTN_HD BudgetCut<T> budget_cut(T total, T gamma) {
  if (gamma >= T(1) || !(total == total) || total - total != T(0)) return {true, T(0)};
  return {false, gamma * total};
}

// k_h from the number of the (rising) prefix sums that stay below the cut's target.
template <class T>
PROXYATTN_HD std::int64_t budget_from_count_below(BudgetCut<T> cut, std::int64_t below, std::int64_t nb) {
  if (cut.keep_all) return nb;
  return cut.target <= T(0) ? 0 : min64(nb, below + 1);
}

// The same over the masses sorted in decreasing order: `prefix_at(i)` returns the prefix sum of
// the i+1 largest masses.
template <class PrefixAt>
PROXYATTN_HD std::int64_t budget_from_sorted_prefix(PrefixAt prefix_at, std::int64_t nb, double gamma) {
  if (nb == 0) return 0;
  const BudgetCut<double> cut = budget_cut(static_cast<double>(prefix_at(nb - 1)), gamma);
  std::int64_t below = 0;
  while (!cut.keep_all && below < nb && static_cast<double>(prefix_at(below)) < cut.target) ++below;
  return budget_from_count_below(cut, below, nb);
}

// budget_mode = row_mass: the count of query block m is k_h's rule applied to the head's stage-2
// masses of blocks 0..m only (the last row's count is k_h). `block_at(i)` and `mass_at(i)` give
// the head's i-th largest mass and its block (the head's order); T is the precision of the sums,
// taken in that order as for k_h. A NaN or Inf among the masses of the prefix keeps the whole row.
template <class T, class BlockAt, class MassAt>
PROXYATTN_HD std::int64_t prefix_budget(BlockAt block_at, MassAt mass_at, std::int64_t nb, std::int64_t m, T gamma) {
  T total = T(0);
  for (std::int64_t i = 0; i < nb; ++i)
    if (block_at(i) <= m) total += mass_at(i);
  const BudgetCut<T> cut = budget_cut(total, gamma);
  std::int64_t below = 0;
  T sum = T(0);
  for (std::int64_t i = 0; i < nb && !cut.keep_all; ++i) {
    if (block_at(i) > m) continue;
    sum += mass_at(i);
    if (!(sum < cut.target)) break;
    ++below;
  }
  return budget_from_count_below(cut, below, m + 1);
}

// The count that row m starts from, before row_budget: the last query block's own count k_last
// (Config::last_block_gamma), the row's prefix count under row_mass (`prefix_count(m)`, computed
// only there), else the head's k_h. One choice for every backend.
template <class PrefixCount>
PROXYATTN_HD std::int64_t row_base(std::int64_t k_h, std::int64_t k_last, std::int64_t m, std::int64_t nb,
                                   BudgetMode mode, PrefixCount prefix_count) {
  if (m == nb - 1) return k_last;
  return mode == BudgetMode::row_mass ? prefix_count(m) : k_h;
}

// Ranking key of a proxy score: NaN ranks below everything, so a poisoned input can neither
// break the sort nor push out the blocks that real scores chose.
PROXYATTN_HD float rank_key(float score) { return score == score ? score : -3.0e38f; }
PROXYATTN_HD double rank_key(double score) { return score == score ? score : -1.0e308; }

}  // namespace proxyattn::rules
