// Judges an estimate against the reference's double-precision stage quantities. Two correct
// implementations in different precisions may choose differently only where the reference
// values are within `tol` of a tie: at the gamma cut of a budget, or between two blocks of
// (nearly) equal proxy score. Everything else must hold exactly: forced blocks, counts from the
// integer rules, ascending order, and the top-k property of every row.
#pragma once

#include <algorithm>
#include <functional>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "core/plan_impl.hpp"
#include "core/rules.hpp"
#include "reference/reference.hpp"
#include "test_util.hpp"

namespace testutil {

struct MaskCheck {
  std::int64_t heads_checked = 0, budgets_equal = 0;
  std::int64_t rows_checked = 0, rows_equal = 0;
  std::vector<std::string> failures;
  void fail(const std::string& s) {
    if (failures.size() < 20) failures.push_back(s);
  }
  std::string report() const {
    std::ostringstream o;
    o << "budgets equal " << budgets_equal << "/" << heads_checked << ", rows equal " << rows_equal << "/"
      << rows_checked;
    for (const auto& f : failures) o << "\n  " << f;
    return o.str();
  }
};

// One row of a mask: its kept blocks (ascending) and which blocks stage 3 forces.
struct RowView {
  const std::vector<std::int32_t>& blocks;
  std::int64_t m;
  bool keep_sink;
  bool has(std::int64_t n) const { return std::binary_search(blocks.begin(), blocks.end(), n); }
  bool forced(std::int64_t n) const { return n == m || (keep_sink && n == 0); }
  std::int64_t unforced_kept() const { return static_cast<std::int64_t>(blocks.size()) - (keep_sink && m > 0 ? 2 : 1); }
};

// The choice of one row against the reference's values. Stage 3 takes, after the forced blocks,
// the head's `columns` highest-mass blocks (all of its order in an exact last block) where they
// are causal, heaviest first, then the proxy ranking. Masses and scores differ between
// precisions, so a block within tol of a cut may go either way (mass_tol for the stage-2 masses,
// which every backend computes from the same inputs in at least fp32); every other block must
// fall on the side the reference puts it.
inline void check_row_choice(MaskCheck& out, const std::string& where, const RowView& v, std::int64_t columns,
                             const std::vector<double>& mass, const std::vector<std::int32_t>& order,
                             const double* a, double tol, double mass_tol = 1e-4) {
  const std::int64_t nb = static_cast<std::int64_t>(mass.size()), R = v.unforced_kept();
  auto w = [&](std::int64_t n) { return mass[n] == mass[n] ? mass[n] : -1.0; };  // NaN ranks last
  const double cut = columns > 0 && columns < nb ? w(order[columns]) : -2.0;     // first non-column
  auto sure = [&](std::int64_t n) { return columns > 0 && w(n) > cut + mass_tol; };
  auto maybe = [&](std::int64_t n) { return columns > 0 && w(n) >= cut - mass_tol; };
  std::int64_t n_sure = 0;
  for (std::int64_t n = 0; n <= v.m; ++n) n_sure += !v.forced(n) && sure(n);
  auto report = [&](const char* what, double lo, double hi) {
    std::ostringstream o;
    o << where << what << ": kept " << lo << " below dropped " << hi;
    out.fail(o.str());
  };
  if (n_sure >= R) {  // columns fill the row: only columns, the heaviest first
    double min_kept = 1e300, max_dropped = -1e300;
    for (std::int64_t n = 0; n <= v.m; ++n) {
      if (v.forced(n)) continue;
      if (v.has(n) && !maybe(n)) out.fail(where + "kept block " + std::to_string(n) + ", not a column, in a row of columns");
      if (v.has(n)) min_kept = std::min(min_kept, w(n));
      else if (sure(n)) max_dropped = std::max(max_dropped, w(n));
    }
    if (min_kept < max_dropped - mass_tol) report("head mass", min_kept, max_dropped);
    return;
  }
  double row_max = 0, min_kept = 1e300, max_dropped = -1e300;
  for (std::int64_t n = 0; n <= v.m; ++n) row_max = std::max(row_max, a[n]);
  for (std::int64_t n = 0; n <= v.m; ++n) {
    if (v.forced(n)) continue;
    if (sure(n) && !v.has(n)) out.fail(where + "dropped column block " + std::to_string(n));
    if (maybe(n)) continue;
    if (v.has(n)) min_kept = std::min(min_kept, a[n]);
    else max_dropped = std::max(max_dropped, a[n]);
  }
  if (min_kept < max_dropped - tol * row_max) report("proxy score", min_kept, max_dropped);
}

// Whether `count` (row m's count before the floor: k_h at the last row, the row_mass count, the
// last block's own cut) is the reference's count from the masses of blocks 0..m at `gamma`, or
// one that a near-tie at that cut allows.
inline bool count_near_cut(const std::vector<double>& mass, std::int64_t m, double gamma, std::int64_t count,
                              double tol) {
  std::vector<double> head(mass.begin(), mass.begin() + m + 1);
  for (double& x : head) x = x == x ? x : -1.0;  // NaN: the reference keeps the whole row
  if (std::any_of(head.begin(), head.end(), [](double x) { return x < 0; })) return count == m + 1;
  std::sort(head.begin(), head.end(), std::greater<double>());
  std::vector<double> prefix(head.size());
  std::partial_sum(head.begin(), head.end(), prefix.begin());
  const std::int64_t want = proxyattn::detail::reference::row_mass_budget(
      mass, proxyattn::detail::reference::mass_order(mass), m, gamma);
  if (count == want) return true;
  const double target = gamma * prefix.back();
  return count < want ? (count >= 1 && prefix[count - 1] >= target - tol)
                      : (count >= 2 && count <= m + 1 && prefix[count - 2] < target + tol);
}

inline MaskCheck check_estimate(const Plan& plan, const TensorView& q, const TensorView& k, const HostEstimate& got,
                                const HostEstimate* ref, double tol) {
  namespace ref_ns = proxyattn::detail::reference;
  const Plan::Impl& p = plan.impl();
  const Config& c = p.config;
  const int heads = p.problem.q_heads, groups = c.proxy_groups, per_group = heads / groups;
  const std::int64_t min_blocks = proxyattn::rules::ceil_div(c.min_budget_tokens, c.block_size);
  MaskCheck out;
  for (int s = 0; s < p.problem.num_seqs(); ++s) {
    // Keys packed by cu_seqlens_k (not paged); the rows are the query blocks first .. nb - 1.
    const ref_ns::Seq seq{p.seq_begin(s), p.seq_len(s), p.kv_begin(s), p.kv_len(s)};
    const std::int64_t nb = p.kv_blocks(s), first = p.first_block(s);
    std::vector<std::vector<double>> A(groups);
    for (int j = 0; j < groups; ++j)
      A[j] = ref_ns::proxy_block_scores(q, k, seq, j, groups, c.stride, c.block_size, p.scale);
    for (int h = 0; h < heads; ++h) {
      ++out.heads_checked;
      const std::int64_t kg = got.budget_blocks[s * heads + h];
      const std::vector<double> mass = ref_ns::head_block_mass(q, k, seq, h, p.gqa_ratio(), c.block_size, p.scale);
      const std::int64_t kr = seq.len ? ref_ns::budget_blocks(mass, c.gamma) : 0;
      if (kg == kr) {
        ++out.budgets_equal;
      } else {
        if (nb == 0 || !count_near_cut(mass, nb - 1, c.gamma, kg, tol))
          out.fail("seq " + std::to_string(s) + " head " + std::to_string(h) + ": budget " + std::to_string(kg) +
                   " blocks, reference " + std::to_string(kr) + " and not a near-tie at gamma");
      }
      const std::vector<std::int32_t> order = ref_ns::mass_order(mass);
      std::int64_t kept_sum = 0;
      for (std::int64_t m = first; m < first + p.seq_blocks(s); ++m) {
        ++out.rows_checked;
        const std::int64_t row = (p.block_offset[s] + m - first) * heads + h;
        const std::vector<std::int32_t> blocks(got.mask.col_indices.begin() + got.mask.row_offsets[row],
                                               got.mask.col_indices.begin() + got.mask.row_offsets[row + 1]);
        kept_sum += static_cast<std::int64_t>(blocks.size());
        const std::string where = "seq " + std::to_string(s) + " block " + std::to_string(m) + " head " +
                                  std::to_string(h) + ": ";
        auto row_count = [&](std::int64_t base) {
          return proxyattn::rules::row_budget(base, m, nb, min_blocks, c.keep_sink, c.budget_mode);
        };
        // A row counted from the masses at `cut` (the last block's own cut, or row_mass): the
        // reference's count, or a neighbour that a near-tie at the cut allows.
        auto own_count = [&](double cut) {
          const std::int64_t got_count = static_cast<std::int64_t>(blocks.size());
          const std::int64_t cr = ref_ns::row_mass_budget(mass, order, m, cut);
          for (std::int64_t b : {cr - 1, cr + 1})
            if (b >= 0 && row_count(cr) != got_count && row_count(b) == got_count &&
                count_near_cut(mass, m, cut, b, tol))
              return got_count;
          return row_count(cr);
        };
        const std::int64_t want = m == nb - 1 ? own_count(proxyattn::rules::last_block_cut(c.gamma, c.last_block_gamma))
                                  : c.budget_mode == BudgetMode::row_mass ? own_count(c.gamma)
                                                                          : row_count(kg);
        if (static_cast<std::int64_t>(blocks.size()) != want) {
          out.fail(where + "keeps " + std::to_string(blocks.size()) + " blocks, rule says " + std::to_string(want));
          continue;
        }
        if (!std::is_sorted(blocks.begin(), blocks.end()) ||
            std::adjacent_find(blocks.begin(), blocks.end()) != blocks.end() ||
            (!blocks.empty() && (blocks.front() < 0 || blocks.back() > m))) {
          out.fail(where + "indices not ascending, unique and in [0, m]");
          continue;
        }
        RowView v{blocks, m, c.keep_sink};
        if (!v.has(m) || (c.keep_sink && !v.has(0))) out.fail(where + "a forced block is missing");
        const std::int64_t columns = c.exact_last_block && m == nb - 1 ? nb : std::min<std::int64_t>(c.head_columns, kg);
        check_row_choice(out, where, v, columns, mass, order, &A[h / per_group][m * nb], tol);
        if (ref) {
          const bool same = std::equal(blocks.begin(), blocks.end(),
                                       ref->mask.col_indices.begin() + ref->mask.row_offsets[row],
                                       ref->mask.col_indices.begin() + ref->mask.row_offsets[row + 1]);
          out.rows_equal += same;
        }
      }
      if (kept_sum != got.kept_blocks[s * heads + h])
        out.fail("seq " + std::to_string(s) + " head " + std::to_string(h) + ": kept_blocks " +
                 std::to_string(got.kept_blocks[s * heads + h]) + " but the rows hold " + std::to_string(kept_sum));
    }
  }
  return out;
}

// For inputs whose unforced blocks all tie exactly (keys periodic with the block size): each row
// of a one-sequence mask must keep blocks 0 .. count-2 and its diagonal.
inline void expect_ties_to_lower_index(const HostEstimate& e, std::int64_t blocks, int heads) {
  for (std::int64_t m = 0; m < blocks; ++m)
    for (int h = 0; h < heads; ++h) {
      const std::int64_t row = m * heads + h;
      const std::vector<std::int32_t> got(e.mask.col_indices.begin() + e.mask.row_offsets[row],
                                          e.mask.col_indices.begin() + e.mask.row_offsets[row + 1]);
      std::vector<std::int32_t> want;
      for (std::int64_t n = 0; n + 1 < static_cast<std::int64_t>(got.size()); ++n) want.push_back(static_cast<std::int32_t>(n));
      want.push_back(static_cast<std::int32_t>(m));
      ASSERT_EQ(got, want) << "block " << m << " head " << h;
    }
}

}  // namespace testutil
