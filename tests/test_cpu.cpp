// The fast CPU backend against the reference, over shapes that break lazy code.
#include <algorithm>
#include <cmath>

#include "core/plan_impl.hpp"
#include "cpu/simd.hpp"
#include "mask_check.hpp"
#include "test_util.hpp"

using namespace testutil;

namespace {

double bound(DType dt) { return dt == DType::float32 ? 1e-5 : 1e-2; }

struct Case {
  std::vector<std::int32_t> lengths;
  int hq, hkv, dim;
  DType dtype;
  int block, stride, groups;
  double gamma;
  BudgetMode mode = BudgetMode::row_ratio;
  bool keep_sink = true;
  bool exact_last_block = false;
  int head_columns = 0;
  double last_block_gamma = 0.0;
};

std::string describe(const Case& c) {
  std::string s = "lengths";
  for (auto l : c.lengths) s += " " + std::to_string(l);
  return s + " hq " + std::to_string(c.hq) + " hkv " + std::to_string(c.hkv) + " dim " + std::to_string(c.dim) +
         " " + dtype_name(c.dtype) + " block " + std::to_string(c.block) + " stride " + std::to_string(c.stride) +
         " groups " + std::to_string(c.groups) + " gamma " + std::to_string(c.gamma) +
         (c.mode == BudgetMode::row_ratio ? "" : std::string(" ") + budget_mode_name(c.mode)) +
         (c.keep_sink ? "" : " no-sink") +
         (c.exact_last_block ? " exact_last_block" : "") + " head_columns " + std::to_string(c.head_columns) +
         " last_block_gamma " + std::to_string(c.last_block_gamma);
}

Config config_of(const Case& t, Backend b) {
  Config c;
  c.block_size = t.block;
  c.stride = t.stride;
  c.proxy_groups = t.groups;
  c.gamma = t.gamma;
  c.min_budget_tokens = t.block;  // one block: keep the budgets small so that the masks are sparse
  c.budget_mode = t.mode;
  c.keep_sink = t.keep_sink;
  c.exact_last_block = t.exact_last_block;
  c.head_columns = t.head_columns;
  c.last_block_gamma = t.last_block_gamma;
  c.backend = b;
  return c;
}

// Runs the whole pipeline on both backends and compares every output.
void compare(const Case& t, std::uint64_t seed) {
  SCOPED_TRACE(describe(t) + " seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Problem pr = make_problem(t.lengths, t.hq, t.hkv, t.dim, t.dtype);
  Plan fast(config_of(t, Backend::cpu), pr), ref(config_of(t, Backend::cpu_reference), pr);
  Qkv x = random_qkv(pr, rng);
  const std::int64_t n = pr.total_tokens();

  const HostEstimate ef = to_host(fast, estimate(fast, x.q.view(), x.k.view()));
  const HostEstimate er = to_host(ref, estimate(ref, x.q.view(), x.k.view()));
  const MaskCheck check = check_estimate(ref, x.q.view(), x.k.view(), ef, &er, 1e-4);
  EXPECT_TRUE(check.failures.empty()) << check.report();
  // Near-ties are rare on random data: nearly every row must match exactly.
  EXPECT_GE(check.rows_equal, check.rows_checked * 95 / 100) << check.report();

  // Stage 4 on one mask (the reference's), dense, and the full pipeline.
  HostTensor of(t.dtype, {n, t.hq, t.dim}), orf = of, lf(DType::float32, {t.hq, n}), lr = lf;
  for (int pass = 0; pass < 2; ++pass) {
    of.poison(), orf.poison(), lf.poison(), lr.poison();
    if (pass == 0) {
      sparse_attention(fast, x.q.view(), x.k.view(), x.v.view(), er.mask.view(), of.view(), lf.view());
      sparse_attention(ref, x.q.view(), x.k.view(), x.v.view(), er.mask.view(), orf.view(), lr.view());
    } else {
      dense_attention(fast, x.q.view(), x.k.view(), x.v.view(), of.view(), lf.view());
      dense_attention(ref, x.q.view(), x.k.view(), x.v.view(), orf.view(), lr.view());
    }
    ASSERT_TRUE(of.all_finite()) << (pass ? "dense" : "sparse") << ": unwritten or non-finite output";
    ASSERT_TRUE(lf.all_finite());
    if (n > 0) EXPECT_LT(rel_error(of, orf), bound(t.dtype)) << (pass ? "dense" : "sparse");
    if (n > 0) EXPECT_LT(rel_error(lf, lr), 1e-5) << (pass ? "dense" : "sparse") << " lse";
  }
}

}  // namespace

TEST(CpuBackend, SweepAgainstReference) {
  const std::uint64_t seed = fresh_seed();
  const std::vector<Case> cases = {
      {{1}, 4, 4, 64, DType::float32, 16, 4, 1, 0.9},
      {{100}, 4, 1, 64, DType::float32, 16, 4, 1, 0.9},
      {{129}, 7, 1, 128, DType::bfloat16, 32, 8, 1, 0.95},
      {{77}, 8, 1, 256, DType::float16, 16, 2, 1, 0.9},
      {{150}, 8, 2, 40, DType::float32, 16, 1, 2, 0.9},
      {{0, 1, 63, 200}, 8, 4, 64, DType::bfloat16, 16, 4, 4, 0.9},
      {{190}, 4, 2, 64, DType::float32, 16, 8, 2, 0.8, BudgetMode::last_row_count},
      {{160}, 4, 4, 32, DType::float32, 16, 4, 1, 0.0, BudgetMode::row_ratio, false},
      {{33, 170}, 8, 8, 64, DType::float32, 16, 2, 8, 1.0},
      // The head's own preferences: exact last block and columns, alone and together.
      {{1, 130, 257}, 7, 1, 64, DType::float32, 16, 4, 1, 0.9, BudgetMode::last_row_count, true, true, 0},
      {{300}, 8, 2, 64, DType::bfloat16, 16, 4, 2, 0.9, BudgetMode::row_ratio, true, false, 3},
      {{45, 260}, 8, 4, 128, DType::float16, 16, 4, 0, 0.8, BudgetMode::last_row_count, false, true, 4},
      {{200}, 4, 1, 64, DType::float32, 16, 2, 1, 0.0, BudgetMode::row_ratio, true, true, 2},
      {{220}, 4, 2, 64, DType::float32, 16, 4, 1, 1.0, BudgetMode::last_row_count, true, true, 5},
      // Each row's count from its own causal prefix, with ragged lengths, GQA 7 and the preferences.
      {{1, 130, 257}, 7, 1, 64, DType::float32, 16, 4, 1, 0.9, BudgetMode::row_mass, true, true, 3},
      {{300, 45}, 8, 2, 128, DType::bfloat16, 16, 2, 2, 0.8, BudgetMode::row_mass},
      // The last query block's own cut, above gamma, with and without its exact ranking.
      {{1, 130, 257}, 8, 2, 64, DType::float32, 16, 4, 2, 0.8, BudgetMode::last_row_count, true, true, 4, 0.99},
      {{200, 90}, 7, 1, 64, DType::float16, 16, 2, 1, 0.5, BudgetMode::row_mass, true, false, 0, 1.0},
  };
  for (const Case& c : cases) compare(c, seed);
}

// Every instruction-set level this build has and this CPU runs computes the same function.
TEST(CpuBackend, EveryKernelLevelMatchesReference) {
  namespace cpu = proxyattn::detail::cpu;
  const std::uint64_t seed = fresh_seed();
  const std::vector<Case> cases = {
      {{1, 100, 257}, 8, 2, 64, DType::float32, 16, 4, 2, 0.9, BudgetMode::last_row_count, true, true, 4},
      {{129}, 7, 1, 128, DType::bfloat16, 32, 8, 1, 0.95},
      {{77}, 4, 4, 40, DType::float16, 16, 2, 0, 0.8},
  };
  for (const cpu::Kernels* k : cpu::available_kernels()) {
    SCOPED_TRACE(std::string("kernels ") + k->name);
    cpu::force_kernels(k->name);
    EXPECT_STREQ(cpu::kernels().name, k->name);
    for (const Case& c : cases) compare(c, seed);
  }
  cpu::force_kernels("");
  EXPECT_STREQ(cpu::kernels().name, cpu::available_kernels().front()->name);
  EXPECT_THROW(cpu::force_kernels("avx1024"), Error);
}

// A non-finite key or value reaches only the queries that see it: the rows before it in the
// causal order stay exactly as they were (0 * NaN must never enter them), on every level.
TEST(CpuBackend, NonFiniteKeysAndValuesStayInTheRowsThatSeeThem) {
  namespace cpu = proxyattn::detail::cpu;
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Problem pr = make_problem({40}, 4, 2, 32, DType::float32);
  const Qkv clean = random_qkv(pr, rng);
  for (const cpu::Kernels* k : cpu::available_kernels()) {
    cpu::force_kernels(k->name);
    for (Backend b : {Backend::cpu, Backend::cpu_reference})
      for (const char* which : {"k", "v"})
        for (double bad : {NAN, INFINITY}) {
          SCOPED_TRACE(std::string(k->name) + " " + backend_name(b) + " " + which + " " + std::to_string(bad));
          Config c;
          c.block_size = 16;
          c.backend = b;
          Plan plan(c, pr);
          Qkv x = clean;
          for (int d = 0; d < 32; ++d) (*which == 'k' ? x.k : x.v).set((5 * 2 + 1) * 32 + d, bad);  // token 5, kv head 1
          HostTensor o0(DType::float32, {40, 4, 32}), o1 = o0;
          dense_attention(plan, clean.q.view(), clean.k.view(), clean.v.view(), o0.view(), TensorView{});
          dense_attention(plan, x.q.view(), x.k.view(), x.v.view(), o1.view(), TensorView{});
          for (std::int64_t t = 0; t < 40; ++t)
            for (int h = 0; h < 4; ++h)
              for (int d = 0; d < 32; ++d) {
                const std::int64_t i = (t * 4 + h) * 32 + d;
                if (t < 5 || h < 2) ASSERT_EQ(o0.at(i), o1.at(i)) << "token " << t << " head " << h;
              }
        }
  }
  cpu::force_kernels("");
}

TEST(CpuBackend, GammaOneIsDenseAttention) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Config c;
  c.block_size = 32;
  c.gamma = 1.0;
  c.min_budget_tokens = 0;
  c.backend = Backend::cpu;
  const Problem pr = make_problem({300, 45}, 8, 2, 64, DType::bfloat16);
  Plan plan(c, pr);
  Qkv x = random_qkv(pr, rng);
  HostTensor o1(pr.dtype, {pr.total_tokens(), 8, 64}), o2 = o1;
  o1.poison();
  o2.poison();
  const HostEstimate e = to_host(plan, attention(plan, x.q.view(), x.k.view(), x.v.view(), o1.view(), TensorView{}));
  dense_attention(plan, x.q.view(), x.k.view(), x.v.view(), o2.view(), TensorView{});
  EXPECT_DOUBLE_EQ(e.density(), 1.0);
  EXPECT_EQ(o1.bytes, o2.bytes) << "the full mask must give dense attention exactly";
}

TEST(CpuBackend, StridedInputsEqualContiguous) {
  // Q, K, V as views into one packed [N, Hq + 2 Hkv, D] buffer, as a fused QKV projection gives.
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int hq = 4, hkv = 2, D = 32;
  const std::int64_t n = 90;
  const Problem pr = make_problem({90}, hq, hkv, D, DType::float32);
  Config c;
  c.block_size = 16;
  Plan plan(c, pr);
  HostTensor qkv = random_tensor(DType::float32, {n, hq + 2 * hkv, D}, rng);
  auto slice = [&](int h0, int heads) {
    TensorView t = qkv.view();
    t.data = reinterpret_cast<float*>(qkv.bytes.data()) + h0 * D;
    t.shape[1] = heads;
    return t;
  };
  HostTensor q(DType::float32, {n, hq, D}), k(DType::float32, {n, hkv, D}), v = k;
  for (std::int64_t t = 0; t < n; ++t)
    for (int d = 0; d < D; ++d) {
      for (int h = 0; h < hq; ++h) q.set((t * hq + h) * D + d, qkv.at((t * (hq + 2 * hkv) + h) * D + d));
      for (int h = 0; h < hkv; ++h) {
        k.set((t * hkv + h) * D + d, qkv.at((t * (hq + 2 * hkv) + hq + h) * D + d));
        v.set((t * hkv + h) * D + d, qkv.at((t * (hq + 2 * hkv) + hq + hkv + h) * D + d));
      }
    }
  HostTensor o1(DType::float32, {n, hq, D}), o2 = o1;
  attention(plan, slice(0, hq), slice(hq, hkv), slice(hq + hkv, hkv), o1.view(), TensorView{});
  attention(plan, q.view(), k.view(), v.view(), o2.view(), TensorView{});
  EXPECT_EQ(o1.bytes, o2.bytes);
}

TEST(CpuBackend, NanStaysInItsSequenceAndHead) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (Backend b : {Backend::cpu, Backend::cpu_reference}) {
    SCOPED_TRACE(backend_name(b));
    Config c;
    c.block_size = 16;
    c.proxy_groups = 2;  // heads 0-3 read kv head 0 (group 0), heads 4-7 kv head 1 (group 1)
    c.min_budget_tokens = 16;
    c.backend = b;
    const Problem pr = make_problem({70, 80, 60}, 8, 2, 32, DType::float32);
    Plan plan(c, pr);
    Qkv clean = random_qkv(pr, rng);
    auto run = [&](const Qkv& x, HostTensor& o, HostTensor& l) {
      o = HostTensor(DType::float32, {pr.total_tokens(), 8, 32});
      l = HostTensor(DType::float32, {8, pr.total_tokens()});
      o.poison();
      l.poison();
      attention(plan, x.q.view(), x.k.view(), x.v.view(), o.view(), l.view());
    };
    HostTensor o0, l0, o1, l1;
    run(clean, o0, l0);
    ASSERT_TRUE(o0.all_finite());
    // NaN in query head 1 of sequence 1 (tokens 70..149), at a strided token the proxy reads.
    Qkv dirty = clean;
    dirty.q.set((78 * 8 + 1) * 32 + 3, NAN);
    run(dirty, o1, l1);
    for (std::int64_t t = 0; t < pr.total_tokens(); ++t)
      for (int h = 0; h < 8; ++h) {
        const bool same_seq = t >= 70 && t < 150;
        for (int d = 0; d < 32; ++d) {
          const std::int64_t i = (t * 8 + h) * 32 + d;
          if (!same_seq || h >= 4)  // other sequences, other proxy group: bit for bit unchanged
            ASSERT_EQ(o0.at(i), o1.at(i)) << "token " << t << " head " << h;
          else if (h != 1)  // same group: the shared ranking may move, the values stay finite
            ASSERT_TRUE(std::isfinite(o1.at(i))) << "token " << t << " head " << h;
        }
      }
  }
}

// Keys that repeat with the period of a block make the proxy scores of all earlier full blocks
// exactly equal, so the tie rule alone decides: the lowest block indices are kept.
TEST(CpuBackend, TiesGoToTheLowerBlockIndex) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int B = 16;
  const Problem pr = make_problem({200}, 4, 2, 32, DType::float32);
  Qkv x = random_qkv(pr, rng);
  for (std::int64_t t = B; t < 200; ++t)
    for (int i = 0; i < 2 * 32; ++i) x.k.set(t * 64 + i, x.k.at((t % B) * 64 + i));
  for (Backend b : {Backend::cpu, Backend::cpu_reference}) {
    SCOPED_TRACE(backend_name(b));
    Config c;
    c.block_size = B;
    c.gamma = 0.5;
    c.min_budget_tokens = 3 * B;
    c.backend = b;
    Plan plan(c, pr);
    const HostEstimate e = to_host(plan, estimate(plan, x.q.view(), x.k.view()));
    expect_ties_to_lower_index(e, plan.num_blocks(), 4);
  }
}
