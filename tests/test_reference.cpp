// The oracle itself, checked against brute-force definitions that materialise everything.
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

#include "core/plan_impl.hpp"
#include "core/tensor_access.hpp"
#include "reference/reference.hpp"
#include "test_util.hpp"

using namespace testutil;
namespace ref = proxyattn::detail::reference;

namespace {

// Full token-level attention with an explicit [N x N] keep matrix, in double.
void brute_attention(const TensorView& q, const TensorView& k, const TensorView& v, std::int64_t begin,
                     std::int64_t len, int h, int kvh, double scale, const std::vector<char>& keep,
                     std::vector<double>& out, std::vector<double>& lse) {
  const std::int64_t D = q.shape[2];
  out.assign(len * D, 0.0);
  lse.assign(len, -INFINITY);
  for (std::int64_t i = 0; i < len; ++i) {
    std::vector<double> s(len, -INFINITY);
    double mx = -INFINITY;
    for (std::int64_t t = 0; t < len; ++t) {
      if (!keep[i * len + t]) continue;
      double d = 0;
      for (std::int64_t e = 0; e < D; ++e) d += proxyattn::detail::load(q, begin + i, h, e) * proxyattn::detail::load(k, begin + t, kvh, e);
      s[t] = d * scale;
      mx = std::max(mx, s[t]);
    }
    if (mx == -INFINITY) continue;
    double sum = 0;
    for (std::int64_t t = 0; t < len; ++t) sum += std::exp(s[t] - mx);
    for (std::int64_t t = 0; t < len; ++t) {
      const double w = std::exp(s[t] - mx) / sum;
      for (std::int64_t e = 0; e < D; ++e) out[i * D + e] += w * proxyattn::detail::load(v, begin + t, kvh, e);
    }
    lse[i] = mx + std::log(sum);
  }
}

}  // namespace

TEST(Reference, SparseAttentionMatchesBruteForceWithEmptyRows) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Config c;
  c.block_size = 8;
  c.stride = 2;
  c.backend = Backend::cpu_reference;
  const Problem pr = make_problem({21, 1, 30}, 4, 2, 16, DType::float32);
  Plan plan(c, pr);
  Qkv x = random_qkv(pr, rng);
  // A random mask in which some rows miss the diagonal and some keep nothing.
  HostBlockMask mask;
  mask.block_size = c.block_size;
  mask.num_heads = pr.q_heads;
  std::vector<std::vector<std::vector<char>>> keep_blocks;  // [seq][row in seq][n]
  for (int s = 0; s < pr.num_seqs(); ++s) {
    const std::int64_t nb = plan.impl().seq_blocks(s);
    for (std::int64_t m = 0; m < nb; ++m)
      for (int h = 0; h < pr.q_heads; ++h) {
        std::vector<std::int32_t> row;
        for (std::int64_t n = 0; n <= m; ++n)
          if (rng() % 3 != 0) row.push_back(static_cast<std::int32_t>(n));
        mask.add_row(row);
      }
  }
  HostTensor out(DType::float32, {pr.total_tokens(), pr.q_heads, pr.head_dim});
  HostTensor lse(DType::float32, {pr.q_heads, pr.total_tokens()});
  out.poison();
  lse.poison();
  sparse_attention(plan, x.q.view(), x.k.view(), x.v.view(), mask.view(), out.view(), lse.view());

  for (int s = 0; s < pr.num_seqs(); ++s) {
    const std::int64_t begin = pr.cu_seqlens[s], len = pr.cu_seqlens[s + 1] - begin;
    for (int h = 0; h < pr.q_heads; ++h) {
      std::vector<char> keep(len * len, 0);
      for (std::int64_t i = 0; i < len; ++i) {
        const std::int64_t row = (plan.impl().block_offset[s] + i / c.block_size) * pr.q_heads + h;
        for (std::int64_t e = mask.row_offsets[row]; e < mask.row_offsets[row + 1]; ++e)
          for (std::int64_t t = mask.col_indices[e] * c.block_size; t < std::min<std::int64_t>((mask.col_indices[e] + 1) * c.block_size, len); ++t)
            if (t <= i) keep[i * len + t] = 1;
      }
      std::vector<double> o, l;
      brute_attention(x.q.view(), x.k.view(), x.v.view(), begin, len, h, h / 2, plan.scale(), keep, o, l);
      for (std::int64_t i = 0; i < len; ++i) {
        const float got_lse = reinterpret_cast<const float*>(lse.bytes.data())[h * pr.total_tokens() + begin + i];
        if (std::isinf(l[i])) {
          EXPECT_TRUE(std::isinf(got_lse) && got_lse < 0) << "row " << i << " keeps nothing: lse must be -inf";
        } else {
          EXPECT_NEAR(got_lse, l[i], 1e-5 * std::max(1.0, std::abs(l[i])));
        }
        for (std::int64_t e = 0; e < pr.head_dim; ++e)
          EXPECT_NEAR(out.at(((begin + i) * pr.q_heads + h) * pr.head_dim + e), o[i * pr.head_dim + e], 1e-5);
      }
    }
  }
}

TEST(Reference, ProxyBlockScoresMatchFullMatrix) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int hq = 8, hkv = 4, D = 16, groups = 2, stride = 3, block = 6;
  const std::int64_t len = 50;
  HostTensor q = random_tensor(DType::float32, {len, hq, D}, rng);
  HostTensor k = random_tensor(DType::float32, {len, hkv, D}, rng);
  const double scale = 0.4;
  for (int j = 0; j < groups; ++j) {
    const auto A = ref::proxy_block_scores(q.view(), k.view(), {0, len}, j, groups, stride, block, scale);
    // Brute force: the whole strided score matrix, causal softmax, then max over each block pair.
    const std::int64_t na = (len + stride - 1) / stride, nb = (len + block - 1) / block;
    std::vector<double> S(na * na, -INFINITY);
    for (std::int64_t a = 0; a < na; ++a)
      for (std::int64_t b = 0; b <= a; ++b) {
        double dot = 0;
        for (int d = 0; d < D; ++d) {
          double qa = 0, kb = 0;
          for (int h = j * hq / groups; h < (j + 1) * hq / groups; ++h) qa += q.at(((a * stride) * hq + h) * D + d);
          for (int h = j * hkv / groups; h < (j + 1) * hkv / groups; ++h) kb += k.at(((b * stride) * hkv + h) * D + d);
          dot += qa / (hq / groups) * kb / (hkv / groups);
        }
        S[a * na + b] = scale * dot;
      }
    std::vector<double> want(nb * nb, 0.0);
    for (std::int64_t a = 0; a < na; ++a) {
      double mx = -INFINITY, sum = 0;
      for (std::int64_t b = 0; b <= a; ++b) mx = std::max(mx, S[a * na + b]);
      for (std::int64_t b = 0; b <= a; ++b) sum += std::exp(S[a * na + b] - mx);
      for (std::int64_t b = 0; b <= a; ++b) {
        double& cell = want[(a * stride / block) * nb + b * stride / block];
        cell = std::max(cell, std::exp(S[a * na + b] - mx) / sum);
      }
    }
    ASSERT_EQ(A.size(), want.size());
    for (std::size_t i = 0; i < A.size(); ++i) EXPECT_NEAR(A[i], want[i], 1e-12) << "cell " << i;
  }
}

TEST(Reference, HeadBlockMassMatchesFullMatrix) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int hq = 4, hkv = 1, D = 8, block = 8;
  for (std::int64_t len : {1, 5, 8, 29}) {
    HostTensor q = random_tensor(DType::float32, {len, hq, D}, rng);
    HostTensor k = random_tensor(DType::float32, {len, hkv, D}, rng);
    for (int h = 0; h < hq; ++h) {
      const auto mass = ref::head_block_mass(q.view(), k.view(), {0, len}, h, 4, block, 0.5);
      const std::int64_t L = std::min<std::int64_t>(block, len), nb = (len + block - 1) / block;
      std::vector<double> want(nb, 0.0);
      for (std::int64_t i = len - L; i < len; ++i) {
        std::vector<double> s(i + 1);
        for (std::int64_t t = 0; t <= i; ++t) {
          double d = 0;
          for (int e = 0; e < D; ++e) d += q.at((i * hq + h) * D + e) * k.at(t * D + e);
          s[t] = 0.5 * d;
        }
        const double mx = *std::max_element(s.begin(), s.end());
        double sum = 0;
        for (double x : s) sum += std::exp(x - mx);
        for (std::int64_t t = 0; t <= i; ++t) want[t / block] += std::exp(s[t] - mx) / sum / L;
      }
      double total = 0;
      for (std::int64_t n = 0; n < nb; ++n) {
        EXPECT_NEAR(mass[n], want[n], 1e-12);
        total += mass[n];
      }
      EXPECT_NEAR(total, 1.0, 1e-12) << "block masses must sum to 1";
    }
  }
}

TEST(Reference, BudgetIsSmallestPrefixReachingGamma) {
  const std::vector<double> mass{0.5, 0.125, 0.25, 0.125};
  EXPECT_EQ(ref::budget_blocks(mass, 0.75), 2);
  EXPECT_EQ(ref::budget_blocks(mass, 0.76), 3);
  EXPECT_EQ(ref::budget_blocks(mass, 0.5), 1);
  EXPECT_EQ(ref::budget_blocks(mass, 0.0), 0);
  EXPECT_EQ(ref::budget_blocks(mass, 1.0), 4);
  EXPECT_EQ(ref::budget_blocks({0.25, NAN, 0.75}, 0.5), 3) << "NaN mass: keep everything";
}

TEST(Reference, RowMassBudgetIsTheLastRowRuleOnEachPrefix) {
  // Block masses 0.5, 0.125, 0.25, 0.0625, 0.0625 (exact in binary), gamma 0.75: row m counts the
  // largest masses of blocks 0..m until they reach 0.75 of those blocks' sum.
  const std::vector<double> mass{0.5, 0.125, 0.25, 0.0625, 0.0625};
  const std::vector<std::int32_t> order = ref::mass_order(mass);
  const std::vector<std::int64_t> want{1, 1, 2, 2, 2};
  for (std::int64_t m = 0; m < 5; ++m) EXPECT_EQ(ref::row_mass_budget(mass, order, m, 0.75), want[m]) << "row " << m;
  EXPECT_EQ(ref::row_mass_budget(mass, order, 4, 0.75), ref::budget_blocks(mass, 0.75)) << "last row: k_h";
  for (std::int64_t m = 0; m < 5; ++m) {
    EXPECT_EQ(ref::row_mass_budget(mass, order, m, 1.0), m + 1) << "gamma 1 keeps the row";
    EXPECT_EQ(ref::row_mass_budget(mass, order, m, 0.0), 0) << "gamma 0 keeps nothing but the forced blocks";
  }
  // A NaN mass keeps every row whose prefix holds it, and no other.
  std::vector<double> poisoned = mass;
  poisoned[3] = std::nan("");
  const std::vector<std::int32_t> porder = ref::mass_order(poisoned);
  EXPECT_EQ(ref::row_mass_budget(poisoned, porder, 2, 0.75), 2);
  EXPECT_EQ(ref::row_mass_budget(poisoned, porder, 3, 0.75), 4);
  EXPECT_EQ(ref::row_mass_budget(poisoned, porder, 4, 0.75), 5);
}

TEST(Reference, SelectBlocksForcedFirstThenScoreThenLowerIndex) {
  //                         0    1    2    3    4    5
  const std::vector<double> a{0.9, 0.2, 0.5, 0.5, 0.1, 0.0};
  EXPECT_EQ(ref::select_blocks(a.data(), 5, 3, true), (std::vector<std::int32_t>{0, 2, 5}));
  EXPECT_EQ(ref::select_blocks(a.data(), 5, 4, true), (std::vector<std::int32_t>{0, 2, 3, 5}));
  EXPECT_EQ(ref::select_blocks(a.data(), 5, 2, false), (std::vector<std::int32_t>{0, 5}));
  EXPECT_EQ(ref::select_blocks(a.data(), 5, 3, false), (std::vector<std::int32_t>{0, 2, 5}));
  EXPECT_EQ(ref::select_blocks(a.data(), 0, 1, true), (std::vector<std::int32_t>{0}));
  const std::vector<double> nan_row{0.1, NAN, 0.3, 0.2};
  EXPECT_EQ(ref::select_blocks(nan_row.data(), 3, 3, false), (std::vector<std::int32_t>{0, 2, 3}));
}

TEST(Reference, HeadPreferencesComeBeforeTheProxyRanking) {
  //                         0    1    2    3    4    5
  const std::vector<double> a{0.9, 0.2, 0.5, 0.5, 0.1, 0.0};
  // Preferred blocks are taken in their order after the forced ones; those past m are skipped.
  EXPECT_EQ(ref::select_blocks(a.data(), 5, 4, true, {4, 1}), (std::vector<std::int32_t>{0, 1, 4, 5}));
  EXPECT_EQ(ref::select_blocks(a.data(), 5, 5, true, {4, 1}), (std::vector<std::int32_t>{0, 1, 2, 4, 5}));
  EXPECT_EQ(ref::select_blocks(a.data(), 5, 3, true, {4, 1}), (std::vector<std::int32_t>{0, 4, 5}));
  EXPECT_EQ(ref::select_blocks(a.data(), 3, 3, true, {4, 5, 1}), (std::vector<std::int32_t>{0, 1, 3}));
  EXPECT_EQ(ref::select_blocks(a.data(), 5, 3, true, {5, 0}), (std::vector<std::int32_t>{0, 2, 5}))
      << "forced blocks in the preferred list take no second place";

  //                           0    1    2    3     4    5
  const std::vector<double> mass{0.3, 0.1, NAN, 0.05, 0.3, 0.25};
  const std::vector<std::int32_t> order = ref::mass_order(mass);
  EXPECT_EQ(order, (std::vector<std::int32_t>{0, 4, 5, 1, 3, 2})) << "ties to the lower index, NaN last";
  // The last block of 6 takes the whole order with exact_last_block; other rows the first
  // min(head_columns, k_h) blocks.
  EXPECT_EQ(ref::preferred_blocks(order, 2, 5, 6, true, 0), order);
  EXPECT_EQ(ref::preferred_blocks(order, 2, 5, 6, false, 3), (std::vector<std::int32_t>{0, 4}));
  EXPECT_EQ(ref::preferred_blocks(order, 5, 4, 6, true, 3), (std::vector<std::int32_t>{0, 4, 5}));
  EXPECT_TRUE(ref::preferred_blocks(order, 5, 4, 6, true, 0).empty());
}

TEST(Reference, EstimateFollowsTheRulesAndGammaOneIsFullMask) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (double gamma : {0.0, 0.8, 1.0})
    for (BudgetMode mode : {BudgetMode::row_ratio, BudgetMode::last_row_count, BudgetMode::row_mass}) {
      Config c;
      c.exact_last_block = mode != BudgetMode::row_ratio;  // the counts never depend on them
      c.head_columns = gamma == 0.8 ? 3 : 0;
      c.block_size = 8;
      c.stride = 2;
      c.gamma = gamma;
      c.min_budget_tokens = 12;  // two blocks
      c.budget_mode = mode;
      c.last_block_gamma = 0.9;  // the last row's own cut (at gamma 1: 1)
      c.proxy_groups = 2;
      c.backend = Backend::cpu_reference;
      const Problem pr = make_problem({70, 9}, 4, 2, 8, DType::float32);
      Plan plan(c, pr);
      Qkv x = random_qkv(pr, rng);
      const HostEstimate e = to_host(plan, estimate(plan, x.q.view(), x.k.view()));
      for (int s = 0; s < pr.num_seqs(); ++s) {
        const std::int64_t nb = plan.impl().seq_blocks(s);
        const ref::Seq seq{plan.impl().seq_begin(s), plan.impl().seq_len(s), plan.impl().kv_begin(s),
                           plan.impl().kv_len(s)};
        for (int h = 0; h < pr.q_heads; ++h) {
          const std::int64_t kh = e.budget_blocks[s * pr.q_heads + h];
          // row_mass's count of row m, from scratch: the masses of blocks 0..m sorted, summed
          // until they reach gamma of their total.
          const std::vector<double> mass =
              ref::head_block_mass(x.q.view(), x.k.view(), seq, h, plan.impl().gqa_ratio(), c.block_size,
                                   plan.impl().scale);
          auto prefix_count = [&](std::int64_t m) -> std::int64_t {
            std::vector<double> head(mass.begin(), mass.begin() + m + 1);
            std::sort(head.begin(), head.end(), std::greater<double>());
            const double total = std::accumulate(head.begin(), head.end(), 0.0);
            if (gamma >= 1.0) return m + 1;
            if (gamma * total <= 0.0) return 0;
            double sum = 0.0;
            for (std::size_t i = 0; i < head.size(); ++i)
              if ((sum += head[i]) >= gamma * total) return static_cast<std::int64_t>(i) + 1;
            return m + 1;
          };
          if (gamma == 1.0) EXPECT_EQ(kh, nb);
          if (gamma == 0.0) EXPECT_EQ(kh, 0);
          for (std::int64_t m = 0; m < nb; ++m) {
            const std::int64_t row = (plan.impl().block_offset[s] + m) * pr.q_heads + h;
            const std::int64_t count = e.mask.row_offsets[row + 1] - e.mask.row_offsets[row];
            std::int64_t want = m == nb - 1                  ? ref::budget_blocks(mass, std::max(gamma, 0.9))
                                : mode == BudgetMode::row_ratio ? (kh * (m + 1) + nb - 1) / nb
                                : mode == BudgetMode::row_mass  ? prefix_count(m)
                                                                : kh;
            want = std::min<std::int64_t>(m + 1, std::max<std::int64_t>({want, 2, m > 0 ? 2 : 1}));
            EXPECT_EQ(count, want) << "seq " << s << " block " << m << " head " << h;
            EXPECT_EQ(e.mask.col_indices[e.mask.row_offsets[row + 1] - 1], m) << "diagonal kept";
            EXPECT_EQ(e.mask.col_indices[e.mask.row_offsets[row]], 0) << "sink kept";
          }
        }
      }
      if (gamma == 1.0) EXPECT_DOUBLE_EQ(e.density(), 1.0);
    }
}

TEST(Reference, DenseEqualsSparseWithFullMask) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Config c;
  c.block_size = 16;
  c.stride = 4;
  c.backend = Backend::cpu_reference;
  const Problem pr = make_problem({45, 17}, 2, 1, 8, DType::float32);
  Plan plan(c, pr);
  Qkv x = random_qkv(pr, rng);
  HostBlockMask full;
  full.block_size = c.block_size;
  full.num_heads = pr.q_heads;
  for (int s = 0; s < pr.num_seqs(); ++s)
    for (std::int64_t m = 0; m < plan.impl().seq_blocks(s); ++m)
      for (int h = 0; h < pr.q_heads; ++h) {
        std::vector<std::int32_t> row;
        for (std::int64_t n = 0; n <= m; ++n) row.push_back(static_cast<std::int32_t>(n));
        full.add_row(row);
      }
  HostTensor o1(DType::float32, {pr.total_tokens(), 2, 8}), o2 = o1;
  o1.poison();
  o2.poison();
  dense_attention(plan, x.q.view(), x.k.view(), x.v.view(), o1.view(), TensorView{});
  sparse_attention(plan, x.q.view(), x.k.view(), x.v.view(), full.view(), o2.view(), TensorView{});
  EXPECT_EQ(o1.bytes, o2.bytes);
  EXPECT_TRUE(o1.all_finite());
}
