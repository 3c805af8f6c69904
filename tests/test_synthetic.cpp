// The demo's synthetic input must have the structure of real attention (sinks, local windows,
// shared retrieval tokens, heads of very different sparsity), measured here on exact attention.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <vector>

#include "commands.hpp"
#include "synthetic.hpp"

namespace {

using proxyattn::tool::is_retrieval_head;
using proxyattn::tool::make_structured_qkv;
using proxyattn::tool::SyntheticQkv;
using proxyattn::tool::SyntheticSpec;

constexpr std::int64_t kBlock = 128;

// Per-head statistics of exact causal softmax attention (double precision).
struct HeadStats {
  double sink_block = 0;      // mean share of key block 0, over queries past block 0
  double sink_tokens = 0;     // mean share of the first 4 tokens, same queries
  double local_ratio = 0;     // share of blocks m-1 and m among non-sink mass / uniform share
  double retrieval_ratio = 0;  // mass on a retrieval token from queries > 1 block after it / 1/(i+1)
  int cover95 = 0;            // key blocks covering 95% of the last block's averaged block mass
};

struct Measured {
  SyntheticSpec spec;
  SyntheticQkv x;
  std::vector<HeadStats> heads;
};

// Calls visit(i, p) with the probabilities p[0..i] of query i of head h.
void for_each_query(const SyntheticSpec& s, const SyntheticQkv& x, int h,
                    const std::function<void(std::int64_t, const std::vector<double>&)>& visit) {
  const int d = s.head_dim, kh = h / (s.q_heads / s.kv_heads);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<double> k(static_cast<std::size_t>(s.tokens) * d), q(d), p;
  for (std::int64_t t = 0; t < s.tokens; ++t)
    for (int c = 0; c < d; ++c) k[t * d + c] = x.k[(t * s.kv_heads + kh) * d + c];
  for (std::int64_t i = 0; i < s.tokens; ++i) {
    for (int c = 0; c < d; ++c) q[c] = x.q[(i * s.q_heads + h) * d + c];
    p.assign(i + 1, 0.0);
    double mx = -INFINITY, z = 0;
    for (std::int64_t t = 0; t <= i; ++t) {
      double dot = 0;
      for (int c = 0; c < d; ++c) dot += q[c] * k[t * d + c];
      mx = std::max(mx, p[t] = dot * scale);
    }
    for (double& v : p) z += (v = std::exp(v - mx));
    for (double& v : p) v /= z;
    visit(i, p);
  }
}

const Measured& measured() {
  static const Measured m = [] {
    Measured m;
    m.spec.tokens = 2048;
    m.spec.q_heads = 8;
    m.spec.kv_heads = 2;
    m.spec.head_dim = 64;
    m.x = make_structured_qkv(m.spec);
    const std::int64_t n = m.spec.tokens, nb = (n + kBlock - 1) / kBlock;
    for (int h = 0; h < m.spec.q_heads; ++h) {
      HeadStats st;
      double sink_n = 0, local = 0, local_uniform = 0, retrieval_n = 0;
      std::vector<double> block_mass(nb, 0.0);
      for_each_query(m.spec, m.x, h, [&](std::int64_t i, const std::vector<double>& p) {
        double first4 = 0;
        for (std::int64_t t = 0; t < std::min<std::int64_t>(4, i + 1); ++t) first4 += p[t];
        if (i >= kBlock) {
          double b0 = 0;
          for (std::int64_t t = 0; t < kBlock; ++t) b0 += p[t];
          st.sink_block += b0;
          st.sink_tokens += first4;
          sink_n += 1;
        }
        if (i >= 2 * kBlock) {  // blocks m-1 and m then exclude the sink tokens
          const std::int64_t lo = (i / kBlock - 1) * kBlock;
          double l = 0;
          for (std::int64_t t = lo; t <= i; ++t) l += p[t];
          local += l / (1.0 - first4);
          local_uniform += static_cast<double>(i - lo + 1) / static_cast<double>(i + 1 - 4);
        }
        for (std::int64_t r : m.x.retrieval_tokens)
          if (i > r + kBlock) {
            st.retrieval_ratio += p[r] * static_cast<double>(i + 1);
            retrieval_n += 1;
          }
        if (i >= n - kBlock)  // DESIGN.md stage 2: averaged block mass of the last B queries
          for (std::int64_t t = 0; t <= i; ++t) block_mass[t / kBlock] += p[t] / kBlock;
      });
      st.sink_block /= sink_n;
      st.sink_tokens /= sink_n;
      st.local_ratio = local / local_uniform;
      st.retrieval_ratio /= retrieval_n;
      std::sort(block_mass.rbegin(), block_mass.rend());
      for (double c = 0; c < 0.95 && st.cover95 < nb;) c += block_mass[st.cover95++];
      std::printf("head %d: first block %.3f, first 4 tokens %.3f, local/uniform %.2f, "
                  "retrieval/uniform %.1f, 95%% cover %d/%lld blocks\n",
                  h, st.sink_block, st.sink_tokens, st.local_ratio, st.retrieval_ratio,
                  st.cover95, static_cast<long long>(nb));
      m.heads.push_back(st);
    }
    return m;
  }();
  return m;
}

TEST(Synthetic, SinksDrawALargeShareInSomeHeads) {
  const auto& heads = measured().heads;
  int strong = 0;
  for (const HeadStats& h : heads) strong += h.sink_tokens > 0.5;
  EXPECT_GE(strong, 3);
  // ... but not in every head: diffuse heads spread their mass.
  const auto weakest = std::min_element(heads.begin(), heads.end(), [](auto& a, auto& b) {
    return a.sink_block < b.sink_block;
  });
  EXPECT_LT(weakest->sink_block, 0.3);
}

TEST(Synthetic, MostHeadsAreLocal) {
  int local = 0;
  for (const HeadStats& h : measured().heads) local += h.local_ratio > 1.25;
  EXPECT_GE(local, 6) << "of " << measured().heads.size() << " heads";
}

TEST(Synthetic, RetrievalHeadsAgreeOnTheRetrievalTokens) {
  const Measured& m = measured();
  ASSERT_GE(m.x.retrieval_tokens.size(), 8u);
  ASSERT_LE(m.x.retrieval_tokens.size(), 16u);
  EXPECT_GE(m.x.retrieval_tokens.front(), kBlock);  // spread through the sequence
  EXPECT_GE(m.x.retrieval_tokens.back(), m.spec.tokens * 3 / 4);
  std::vector<int> kv_heads_seeking;
  double others = 0;
  for (int h = 0; h < m.spec.q_heads; ++h) {
    if (is_retrieval_head(h)) {
      EXPECT_GT(m.heads[h].retrieval_ratio, 30.0) << "head " << h;
      kv_heads_seeking.push_back(h / (m.spec.q_heads / m.spec.kv_heads));
    } else {
      others = std::max(others, m.heads[h].retrieval_ratio);
    }
  }
  std::sort(kv_heads_seeking.begin(), kv_heads_seeking.end());
  EXPECT_GE(std::unique(kv_heads_seeking.begin(), kv_heads_seeking.end()) - kv_heads_seeking.begin(), 2);
  for (int h = 0; h < m.spec.q_heads; ++h) {
    if (is_retrieval_head(h)) {
      EXPECT_GT(m.heads[h].retrieval_ratio, 5.0 * others) << "head " << h;
    }
  }
}

TEST(Synthetic, HeadsDifferInSparsity) {
  const auto& heads = measured().heads;
  const auto [lo, hi] = std::minmax_element(heads.begin(), heads.end(), [](auto& a, auto& b) {
    return a.cover95 < b.cover95;
  });
  EXPECT_LE(lo->cover95, 3);
  EXPECT_GE(hi->cover95, 4 * lo->cover95);
}

TEST(Synthetic, DeterministicAndSeeded) {
  SyntheticSpec s;
  s.tokens = 300;
  s.q_heads = 4;
  s.kv_heads = 2;
  s.head_dim = 32;
  const SyntheticQkv a = make_structured_qkv(s), b = make_structured_qkv(s);
  EXPECT_EQ(a.q, b.q);
  EXPECT_EQ(a.k, b.k);
  EXPECT_EQ(a.v, b.v);
  EXPECT_EQ(a.retrieval_tokens, b.retrieval_tokens);
  // V and the retrieval positions use integer arithmetic only: pin them to catch any change of
  // the generator (the demo's printed numbers depend on them).
  EXPECT_EQ(a.retrieval_tokens, (std::vector<std::int64_t>{63, 118, 191, 283}));
  EXPECT_EQ(a.v[0], 0.236057207f);  // a sink token's value: scaled by 1/4
  EXPECT_EQ(a.v[320], -2.33206844f);
  EXPECT_EQ(a.v[a.v.size() - 1], -0.51068753f);
  s.seed = 2;
  const SyntheticQkv c = make_structured_qkv(s);
  EXPECT_NE(a.q, c.q);
  EXPECT_NE(a.k, c.k);
  EXPECT_NE(a.v, c.v);
}

TEST(Synthetic, ShapesAndSmallSizes) {
  for (auto [tokens, hq, hkv, d] : {std::tuple{1, 1, 1, 8}, {5, 3, 1, 10}, {130, 4, 4, 8}, {700, 6, 2, 256}}) {
    SyntheticSpec s;
    s.tokens = tokens;
    s.q_heads = hq;
    s.kv_heads = hkv;
    s.head_dim = d;
    const SyntheticQkv x = make_structured_qkv(s);
    ASSERT_EQ(x.q.size(), static_cast<std::size_t>(tokens * hq * d));
    ASSERT_EQ(x.k.size(), static_cast<std::size_t>(tokens * hkv * d));
    ASSERT_EQ(x.v.size(), x.k.size());
    for (const auto* vec : {&x.q, &x.k, &x.v}) {
      double sum_sq = 0;
      for (float f : *vec) {
        ASSERT_TRUE(std::isfinite(f));
        sum_sq += static_cast<double>(f) * f;
      }
      EXPECT_GT(sum_sq / vec->size(), 1e-3) << "tokens " << tokens << " d " << d;
    }
    for (std::int64_t r : x.retrieval_tokens) EXPECT_TRUE(r >= 0 && r < tokens);
    EXPECT_TRUE(std::is_sorted(x.retrieval_tokens.begin(), x.retrieval_tokens.end()));
  }
}

TEST(Synthetic, BadSpecsThrow) {
  auto with = [](auto change) {
    SyntheticSpec s;
    s.tokens = 16;
    change(s);
    return s;
  };
  EXPECT_THROW(make_structured_qkv(with([](auto& s) { s.tokens = 0; })), std::invalid_argument);
  EXPECT_THROW(make_structured_qkv(with([](auto& s) { s.q_heads = 0; })), std::invalid_argument);
  EXPECT_THROW(make_structured_qkv(with([](auto& s) { s.kv_heads = 0; })), std::invalid_argument);
  EXPECT_THROW(make_structured_qkv(with([](auto& s) { s.q_heads = 6, s.kv_heads = 4; })),
               std::invalid_argument);
  EXPECT_THROW(make_structured_qkv(with([](auto& s) { s.head_dim = 6; })), std::invalid_argument);
  EXPECT_THROW(make_structured_qkv(with([](auto& s) { s.head_dim = 9; })), std::invalid_argument);
  EXPECT_THROW(make_structured_qkv(with([](auto& s) { s.head_dim = -8; })), std::invalid_argument);
  try {
    make_structured_qkv(with([](auto& s) { s.head_dim = 9; }));
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim"), std::string::npos) << e.what();
  }
}

}  // namespace

// Every Config field has its command-line option (or says why not), and the option exists.
TEST(Tool, EveryConfigFieldHasAnOption) {
  const auto& options = proxyattn::tool::config_options();
  std::vector<std::string> fields;
#define PROXYATTN_NAME(T, name) fields.push_back(#name);
  PROXYATTN_CONFIG_FIELDS(PROXYATTN_NAME)
#undef PROXYATTN_NAME
  ASSERT_EQ(options.size(), fields.size());
  for (std::size_t i = 0; i < fields.size(); ++i) {
    EXPECT_EQ(options[i].first, fields[i]);
    if (!options[i].second.empty())
      EXPECT_TRUE(proxyattn::tool::is_common_option(options[i].second)) << options[i].second;
  }
}
