// The CUDA backend against the CPU reference (the oracle), on small shapes that break lazy code.
// Every test skips, saying so, where no CUDA device is present.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "core/plan_impl.hpp"
#include "cuda_util.hpp"
#include "mask_check.hpp"
#include "test_util.hpp"

using namespace testutil;

namespace {

struct GpuRun {
  HostTensor out, lse;
};

// Sparse (mask) or dense attention on the GPU, outputs poisoned first.
GpuRun run_gpu(Plan& plan, const Qkv& x, const BlockMask* mask) {
  const Problem& p = plan.problem();
  DeviceCopy q(x.q), k(x.k), v(x.v);
  HostTensor out(p.dtype, {p.total_tokens(), p.q_heads, p.head_dim}), lse(DType::float32, {p.q_heads, p.total_tokens()});
  DeviceCopy o(out), l(lse);
  o.poison();
  l.poison();
  if (mask)
    sparse_attention(plan, q.view, k.view, v.view, *mask, o.view, l.view);
  else
    dense_attention(plan, q.view, k.view, v.view, o.view, l.view);
  synchronize(Device::cuda);
  return {o.fetch(out), l.fetch(lse)};
}

GpuRun run_ref(const Problem& pr, const Config& c, const Qkv& x, const BlockMask* mask) {
  Config rc = c;
  rc.backend = Backend::cpu_reference;
  Problem hp = pr;
  hp.device = Device::cpu;
  Plan plan(rc, hp);
  HostTensor out(pr.dtype, {pr.total_tokens(), pr.q_heads, pr.head_dim}), lse(DType::float32, {pr.q_heads, pr.total_tokens()});
  if (mask)
    sparse_attention(plan, x.q.view(), x.k.view(), x.v.view(), *mask, out.view(), lse.view());
  else
    dense_attention(plan, x.q.view(), x.k.view(), x.v.view(), out.view(), lse.view());
  return {out, lse};
}

HostBlockMask random_mask(const Plan& plan, double density, bool drop_diagonal, std::mt19937_64& rng) {
  const Plan::Impl& p = plan.impl();
  HostBlockMask m;
  m.block_size = p.config.block_size;
  m.num_heads = p.problem.q_heads;
  std::uniform_real_distribution<double> u(0, 1);
  for (int s = 0; s < p.problem.num_seqs(); ++s)
    for (std::int64_t b = 0; b < p.seq_blocks(s); ++b)
      for (int h = 0; h < m.num_heads; ++h) {
        std::vector<std::int32_t> row;
        for (std::int64_t n = 0; n <= b; ++n)
          if ((n == b && !drop_diagonal) || u(rng) < density) row.push_back(static_cast<std::int32_t>(n));
        m.add_row(row);
      }
  return m;
}

struct Shape {
  std::vector<std::int32_t> lengths;
  int hq, hkv, dim;
  DType dtype;
};

const std::vector<Shape>& shapes() {
  static const std::vector<Shape> s = {
      {{1}, 4, 4, 64, DType::bfloat16},          {{200}, 4, 1, 128, DType::bfloat16},
      {{300}, 7, 1, 128, DType::float16},        {{129}, 8, 1, 256, DType::bfloat16},
      {{0, 1, 130, 257}, 8, 2, 64, DType::float16}, {{383}, 2, 2, 256, DType::float16},
      // Ragged batches for the sm90 kernel's tiles: 1 token, one short of a block, exactly one
      // block, one past it, blocks that end inside the next sequence, GQA 4:1 and 2:1.
      {{1, 127, 128, 129, 300}, 8, 2, 128, DType::bfloat16}, {{256, 1000}, 4, 2, 128, DType::float16},
      {{385, 70, 640}, 6, 3, 64, DType::bfloat16},
      // D = 256 runs half-block key tiles: sequences that end before, at and just past the
      // second half of a block.
      {{1, 63, 64, 65, 200, 129}, 8, 2, 256, DType::bfloat16},
  };
  return s;
}

std::string name(const Shape& s) {
  std::string n = "lengths";
  for (auto l : s.lengths) n += " " + std::to_string(l);
  return n + " hq " + std::to_string(s.hq) + " hkv " + std::to_string(s.hkv) + " dim " + std::to_string(s.dim) + " " +
         dtype_name(s.dtype);
}

// One GPU run against the reference: the output fully written and finite (fatal otherwise),
// output and LSE within the bf16/fp16 tolerances; prints the case so that a run killed by a
// timeout still shows the cases done.
void expect_close(const GpuRun& g, const GpuRun& r, const std::string& label, const std::string& kernel) {
  ASSERT_TRUE(g.out.all_finite()) << "unwritten or non-finite output";
  const double err = rel_error(g.out, r.out), lse_err = lse_error(g.lse, r.lse);
  EXPECT_LT(err, 1e-2);
  EXPECT_LT(lse_err, 1e-3);
  std::printf("  %s: kernel %s, output error %.1e, lse error %.1e\n", label.c_str(), kernel.c_str(), err, lse_err);
  std::fflush(stdout);
}

// The same call under every kernel choice (cuda_util.hpp), each against the reference r.
void expect_every_kernel_close(const Config& c, const Problem& pr, const Qkv& x, const BlockMask* mask,
                               const GpuRun& r, const std::string& label) {
  for (const KernelChoice& kc : kernel_choices()) {
    UseKernels use(kc);
    Plan plan(c, on_cuda(pr));
    const GpuRun g = run_gpu(plan, x, mask);
    expect_close(g, r, label + ", " + kc.label, checked_kernels(plan, kc));
    if (::testing::Test::HasFatalFailure()) return;
  }
}

}  // namespace

TEST(Cuda, DenseMatchesReference) {
  REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  for (const Shape& sh : shapes()) {
    SCOPED_TRACE(name(sh) + " seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const Problem pr = make_problem(sh.lengths, sh.hq, sh.hkv, sh.dim, sh.dtype);
    Config c;
    const Qkv x = random_qkv(pr, rng);
    const GpuRun r = run_ref(pr, c, x, nullptr);
    expect_every_kernel_close(c, pr, x, nullptr, r, name(sh));
    if (HasFatalFailure()) return;
  }
}

TEST(Cuda, SparseMatchesReferenceOnRandomMasks) {
  REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  for (const Shape& sh : shapes())
    for (bool drop_diagonal : {false, true}) {
      SCOPED_TRACE(name(sh) + (drop_diagonal ? " without diagonals" : "") + " seed " + std::to_string(seed));
      std::mt19937_64 rng(seed);
      const Problem pr = make_problem(sh.lengths, sh.hq, sh.hkv, sh.dim, sh.dtype);
      Config c;
      const Qkv x = random_qkv(pr, rng);
      const HostBlockMask m = random_mask(Plan(c, pr), 0.4, drop_diagonal, rng);
      MaskOnGpu gm(m);
      const BlockMask hm = m.view();
      const GpuRun r = run_ref(pr, c, x, &hm);
      // Rows that keep nothing give exactly 0, so the whole output must be finite too.
      expect_every_kernel_close(c, pr, x, &gm.view, r, name(sh) + (drop_diagonal ? " without diagonals" : ""));
      if (HasFatalFailure()) return;
    }
}

// Q, K and V as head slices of one packed [N, Hq + 2 Hkv, D] buffer and O with a spare head
// slot per token: token strides that are not H * D reach the kernels' addressing (the sm90
// kernel's tensor maps), and the spare slots must stay untouched.
TEST(Cuda, StridedViewsMatchReference) {
  REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  for (const Shape& sh : {Shape{{300, 1, 129}, 8, 2, 128, DType::bfloat16}, Shape{{200, 77}, 4, 4, 64, DType::float16}}) {
    SCOPED_TRACE(name(sh) + " seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const Problem pr = make_problem(sh.lengths, sh.hq, sh.hkv, sh.dim, sh.dtype);
    Config c;
    const Qkv x = random_qkv(pr, rng);
    const GpuRun r = run_ref(pr, c, x, nullptr);
    const std::int64_t n = pr.total_tokens(), D = sh.dim, H = sh.hq + 2 * sh.hkv;
    HostTensor packed(sh.dtype, {n, H, D});
    for (std::int64_t t = 0; t < n; ++t)
      for (std::int64_t d = 0; d < D; ++d) {
        for (int h = 0; h < sh.hq; ++h) packed.set((t * H + h) * D + d, x.q.at((t * sh.hq + h) * D + d));
        for (int h = 0; h < sh.hkv; ++h) {
          packed.set((t * H + sh.hq + h) * D + d, x.k.at((t * sh.hkv + h) * D + d));
          packed.set((t * H + sh.hq + sh.hkv + h) * D + d, x.v.at((t * sh.hkv + h) * D + d));
        }
      }
    DeviceCopy dev(packed);
    const std::size_t es = dtype_size(sh.dtype);
    auto slice = [&](int first_head, int heads) {
      TensorView v = dev.view;
      v.data = static_cast<char*>(dev.buf.data()) + first_head * D * es;
      v.shape = {n, heads, D, 0};
      v.stride = {H * D, D, 1, 0};
      return v;
    };
    for (const KernelChoice& kc : kernel_choices()) {
      UseKernels use(kc);
      Plan plan(c, on_cuda(pr));
      HostTensor out_padded(sh.dtype, {n, sh.hq + 1, D});
      DeviceCopy o(out_padded);
      o.poison();
      TensorView ov = o.view;
      ov.shape = {n, sh.hq, D, 0};
      ov.stride = {(sh.hq + 1) * D, D, 1, 0};
      dense_attention(plan, slice(0, sh.hq), slice(sh.hq, sh.hkv), slice(sh.hq + sh.hkv, sh.hkv), ov, TensorView{});
      synchronize(Device::cuda);
      const HostTensor got_padded = o.fetch(out_padded);
      HostTensor got(sh.dtype, {n, sh.hq, D});
      for (std::int64_t t = 0; t < n; ++t)
        for (std::int64_t i = 0; i < (sh.hq + 1) * D; ++i) {
          const double v = got_padded.at(t * (sh.hq + 1) * D + i);
          if (i < sh.hq * D)
            got.set(t * sh.hq * D + i, v);
          else
            ASSERT_TRUE(std::isnan(v)) << "the spare slot of token " << t << " was written, " << kc.label;
        }
      ASSERT_TRUE(got.all_finite()) << kc.label;
      const double err = rel_error(got, r.out);
      EXPECT_LT(err, 1e-2) << kc.label;
      std::printf("  %s, %s: %s, output error %.1e\n", name(sh).c_str(), kc.label.c_str(),
                  checked_kernels(plan, kc).c_str(), err);
      std::fflush(stdout);  // a hang killed by a timeout still shows the cases done
    }
  }
}

// Keys scaled up block by block (x 1, 2, 3, ... along each sequence), so that a row's later
// key tiles score far above its earlier ones: the sm90 kernel moves its running max and
// rescales the output where a tile exceeds the max by more than its slack, and keeps both
// otherwise, in the same rows. Dense and on a random mask, against the reference.
TEST(Cuda, GrowingScoresMatchReference) {
  REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  for (const int dim : {64, 128, 256})
    for (const DType dtype : {DType::bfloat16, DType::float16}) {
      const std::string label = "dim " + std::to_string(dim) + " " + dtype_name(dtype);
      SCOPED_TRACE(label + " seed " + std::to_string(seed));
      std::mt19937_64 rng(seed);
      const std::vector<std::int32_t> lengths = {1000, 300};
      const Problem pr = make_problem(lengths, 4, 2, dim, dtype);
      Config c;
      Qkv x = random_qkv(pr, rng);
      const std::int64_t token_elems = static_cast<std::int64_t>(pr.kv_heads) * dim;  // K of one token
      std::int64_t t = 0;
      for (const std::int32_t len : lengths)
        for (std::int32_t i = 0; i < len; ++i, ++t)
          for (std::int64_t e = t * token_elems; e < (t + 1) * token_elems; ++e) x.k.set(e, x.k.at(e) * (1 + i / 128));
      const HostBlockMask m = random_mask(Plan(c, pr), 0.5, false, rng);
      MaskOnGpu gm(m);
      const BlockMask hm = m.view();
      for (const bool sparse : {false, true}) {
        const GpuRun r = run_ref(pr, c, x, sparse ? &hm : nullptr);
        expect_every_kernel_close(c, pr, x, sparse ? &gm.view : nullptr, r, label + (sparse ? " sparse" : " dense"));
        if (HasFatalFailure()) return;
      }
    }
}

// Rows of more than 64 entries, so that the sm90 consumers' window of 32 mask indices moves on
// several times within a row, and a raw device mask (which is not validated) whose rows also
// hold entries outside [0, m]: every kernel must skip those and give the clean mask's output.
TEST(Cuda, LongRowsWithBadEntriesMatchReference) {
  REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  for (const auto& [dim, hq] : {std::pair{64, 2}, std::pair{128, 1}}) {
    const std::string label = "dim " + std::to_string(dim) + " hq " + std::to_string(hq);
    SCOPED_TRACE(label + " seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const Problem pr = make_problem({12900, 300}, hq, 1, dim, DType::bfloat16);
    Config c;
    const Qkv x = random_qkv(pr, rng);
    const HostBlockMask clean = random_mask(Plan(c, pr), 0.5, false, rng);
    // The same rows with an entry outside [0, m] before about half of the kept blocks, below 0
    // or above the diagonal block m (each clean row ends with its m).
    HostBlockMask raw;
    raw.block_size = clean.block_size;
    raw.num_heads = clean.num_heads;
    std::uniform_int_distribution<int> coin(0, 3);
    std::int64_t longest = 0;
    for (std::int64_t r = 0; r < clean.num_rows(); ++r) {
      const std::int64_t lo = clean.row_offsets[r], hi = clean.row_offsets[r + 1];
      const std::int32_t m = hi > lo ? clean.col_indices[hi - 1] : 0;
      for (std::int64_t i = lo; i < hi; ++i) {
        const int k = coin(rng);
        if (k == 0) raw.col_indices.push_back(-1 - coin(rng));
        if (k == 1) raw.col_indices.push_back(m + 1 + coin(rng));
        raw.col_indices.push_back(clean.col_indices[i]);
      }
      raw.row_offsets.push_back(static_cast<std::int64_t>(raw.col_indices.size()));
      longest = std::max(longest, raw.row_offsets[r + 1] - raw.row_offsets[r]);
    }
    ASSERT_GT(longest, 64) << "the rows must span three windows of 32 indices";
    MaskOnGpu gm(raw);
    const BlockMask hm = clean.view();
    const GpuRun r = run_ref(pr, c, x, &hm);
    expect_every_kernel_close(c, pr, x, &gm.view, r, label + ", rows of up to " + std::to_string(longest) + " entries");
    if (HasFatalFailure()) return;
  }
}

// NaN in K and V of one sequence must not reach the sequence before it, whose last key block
// ends inside this one (the tile loads rows of both), nor other kv heads' groups.
TEST(Cuda, NanInKeysAndValuesStaysInItsSequence) {
  REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  for (const int dim : {64, 128}) {
    SCOPED_TRACE("dim " + std::to_string(dim) + " seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const Problem pr = make_problem({700, 300, 500}, 8, 2, dim, DType::bfloat16);
    Config c;
    const Qkv clean = random_qkv(pr, rng);
    Qkv dirty = clean;
    for (int t : {700, 760, 999})  // sequence 1: its first token, one inside, its last
      for (int d = 0; d < dim; ++d) {
        dirty.k.set((t * 2 + 0) * dim + d, NAN);  // kv head 0: query heads 0-3
        dirty.v.set((t * 2 + 0) * dim + d, NAN);
      }
    for (const KernelChoice& kc : kernel_choices()) {
      UseKernels use(kc);
      Plan plan(c, on_cuda(pr));
      checked_kernels(plan, kc);
      auto run = [&](const Qkv& x) { return run_gpu(plan, x, nullptr).out; };
      const HostTensor a = run(clean), b = run(dirty);
      ASSERT_TRUE(a.all_finite()) << kc.label;
      for (std::int64_t t = 0; t < pr.total_tokens(); ++t)
        for (int h = 0; h < 8; ++h)
          for (int d = 0; d < dim; ++d) {
            const std::int64_t i = (t * 8 + h) * dim + d;
            if (t < 700 || t >= 1000 || h >= 4)
              ASSERT_EQ(a.at(i), b.at(i)) << "token " << t << " head " << h << ", " << kc.label;
          }
    }
  }
}

TEST(Cuda, EstimateMatchesReferenceUpToNearTies) {
  REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  struct Case {
    Shape shape;
    int stride, groups;
    double gamma;
    BudgetMode mode;
    bool exact = false;
    int columns = 0;
    double last_gamma = 0.0;
  };
  const std::vector<Case> cases = {
      {{{1000}, 8, 2, 128, DType::bfloat16}, 4, 1, 0.9, BudgetMode::row_ratio},
      {{{1500}, 4, 4, 64, DType::float16}, 8, 2, 0.95, BudgetMode::row_ratio},
      {{{0, 700, 1, 1200}, 7, 1, 128, DType::bfloat16}, 2, 1, 0.8, BudgetMode::last_row_count},
      {{{900}, 8, 8, 256, DType::bfloat16}, 16, 8, 0.9, BudgetMode::row_ratio},
      {{{1300}, 8, 4, 64, DType::float16}, 1, 4, 0.0, BudgetMode::row_ratio},
      // Long enough for many key tiles a row and several groups of query blocks per sequence.
      {{{4100, 300}, 8, 2, 128, DType::float16}, 4, 2, 0.9, BudgetMode::last_row_count},
      // The heads' own preferences: exact last block, columns, both; one proxy per kv head.
      {{{1000, 129}, 8, 2, 128, DType::bfloat16}, 4, 1, 0.9, BudgetMode::last_row_count, true, 0},
      {{{1500}, 7, 1, 64, DType::float16}, 4, 1, 0.8, BudgetMode::row_ratio, false, 3},
      {{{0, 2100, 1, 600}, 8, 4, 64, DType::bfloat16}, 4, 0, 0.9, BudgetMode::last_row_count, true, 8},
      {{{4100, 300}, 8, 2, 256, DType::bfloat16}, 8, 0, 0.5, BudgetMode::row_ratio, true, kMaxHeadColumns},
      {{{700}, 4, 1, 128, DType::float16}, 2, 1, 0.0, BudgetMode::last_row_count, true, 2},
      // Each row's count from its own causal prefix (row_mass).
      {{{0, 2100, 1, 600}, 7, 1, 64, DType::bfloat16}, 4, 1, 0.9, BudgetMode::row_mass, true, 16},
      {{{4100, 300}, 8, 2, 128, DType::float16}, 4, 2, 0.8, BudgetMode::row_mass},
      // The last query block's own cut (last_block_gamma).
      {{{0, 2100, 1, 600}, 8, 2, 128, DType::bfloat16}, 4, 1, 0.9, BudgetMode::last_row_count, true, 16, 0.99},
      {{{1500}, 7, 1, 64, DType::float16}, 4, 1, 0.8, BudgetMode::row_mass, false, 3, 1.0},
  };
  for (const Case& cs : cases) {
    SCOPED_TRACE(name(cs.shape) + " stride " + std::to_string(cs.stride) + " groups " + std::to_string(cs.groups) +
                 " gamma " + std::to_string(cs.gamma) + " " + budget_mode_name(cs.mode) + (cs.exact ? " exact_last_block" : "") + " head_columns " +
                 std::to_string(cs.columns) + " last_block_gamma " + std::to_string(cs.last_gamma) + " seed " +
                 std::to_string(seed));
    std::mt19937_64 rng(seed);
    const Problem pr = make_problem(cs.shape.lengths, cs.shape.hq, cs.shape.hkv, cs.shape.dim, cs.shape.dtype);
    Config c;
    c.stride = cs.stride;
    c.proxy_groups = cs.groups;
    c.gamma = cs.gamma;
    c.budget_mode = cs.mode;
    c.exact_last_block = cs.exact;
    c.head_columns = cs.columns;
    c.last_block_gamma = cs.last_gamma;
    c.min_budget_tokens = 128;
    const Qkv x = random_qkv(pr, rng);
    DeviceCopy q(x.q), k(x.k);
    Config rc = c;
    rc.backend = Backend::cpu_reference;
    Plan ref(rc, pr);
    const HostEstimate re = to_host(ref, estimate(ref, x.q.view(), x.k.view()));
    for (const KernelChoice& kc : kernel_choices()) {
      UseKernels use(kc);
      Plan plan(c, on_cuda(pr));
      const HostEstimate ge = to_host(plan, estimate(plan, q.view, k.view));
      // The GPU ranks with proxies rounded to the input dtype: near-ties within 5% of the row max.
      const MaskCheck check = check_estimate(ref, x.q.view(), x.k.view(), ge, &re, 5e-2);
      EXPECT_TRUE(check.failures.empty()) << kc.label << ": " << check.report();
      EXPECT_GE(check.rows_equal, check.rows_checked * 9 / 10) << kc.label << ": " << check.report();
      std::printf("  %s stride %d, %s: %s, %s\n", name(cs.shape).c_str(), cs.stride, kc.label.c_str(),
                  checked_kernels(plan, kc).c_str(), check.report().c_str());
    }
  }
}

TEST(Cuda, GammaOneIsDenseAttention) {
  REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Problem pr = make_problem({1000, 77}, 8, 2, 128, DType::bfloat16);
  Config c;
  c.gamma = 1.0;
  const Qkv x = random_qkv(pr, rng);
  DeviceCopy q(x.q), k(x.k), v(x.v);
  HostTensor out(pr.dtype, {pr.total_tokens(), 8, 128});
  for (const KernelChoice& kc : kernel_choices()) {
    UseKernels use(kc);
    Plan plan(c, on_cuda(pr));
    checked_kernels(plan, kc);
    DeviceCopy o1(out), o2(out);
    o1.poison();
    o2.poison();
    const Estimate e = attention(plan, q.view, k.view, v.view, o1.view, TensorView{});
    EXPECT_DOUBLE_EQ(to_host(plan, e).density(), 1.0) << kc.label;
    dense_attention(plan, q.view, k.view, v.view, o2.view, TensorView{});
    EXPECT_EQ(o1.fetch(out).bytes, o2.fetch(out).bytes) << "the full mask must give dense attention exactly, "
                                                         << kc.label;
  }
}

TEST(Cuda, ZeroTokensGiveEmptyResults) {
  REQUIRE_GPU();
  const Problem pr = make_problem({0}, 8, 2, 128, DType::bfloat16);
  Plan plan(Config{}, on_cuda(pr));
  HostTensor q(pr.dtype, {0, 8, 128}), kv(pr.dtype, {0, 2, 128}), lse(DType::float32, {8, 0});
  DeviceCopy dq(q), dk(kv), dv(kv), o(q), l(lse);
  const HostEstimate h = to_host(plan, attention(plan, dq.view, dk.view, dv.view, o.view, l.view));
  EXPECT_EQ(h.mask.row_offsets, std::vector<std::int64_t>{0});
  dense_attention(plan, dq.view, dk.view, dv.view, o.view, l.view);
  synchronize(Device::cuda);
}

TEST(Cuda, GraphCaptureReplaysTheWholeLayer) {
  REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Problem pr = make_problem({3000, 500}, 8, 2, 128, DType::bfloat16);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  Config c;
  c.min_budget_tokens = 256;
  const Qkv x = random_qkv(pr, rng);
  DeviceCopy q(x.q), k(x.k), v(x.v);
  HostTensor out(pr.dtype, {pr.total_tokens(), 8, 128});
  for (const KernelChoice& kc : kernel_choices()) {
    UseKernels use(kc);
    Plan plan(c, on_cuda(pr), stream);
    checked_kernels(plan, kc);
    DeviceCopy eager(out), graphed(out);
    eager.poison();
    graphed.poison();
    attention(plan, q.view, k.view, v.view, eager.view, TensorView{}, stream);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    cudaGraph_t graph;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
    attention(plan, q.view, k.view, v.view, graphed.view, TensorView{}, stream);
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess) << "estimate + attend must be capturable, " << kc.label;
    cudaGraphExec_t exec;
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (int i = 0; i < 3; ++i) ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(eager.fetch(out).bytes, graphed.fetch(out).bytes) << kc.label;
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
  cudaStreamDestroy(stream);
}

TEST(Cuda, NanStaysInItsSequenceAndGroup) {
  REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Problem pr = make_problem({700, 800, 600}, 8, 2, 64, DType::bfloat16);
  Config c;
  c.proxy_groups = 2;
  c.min_budget_tokens = 128;
  const Qkv clean = random_qkv(pr, rng);
  Qkv dirty = clean;
  dirty.q.set((780 * 8 + 1) * 64 + 3, NAN);  // sequence 1, head 1 (group 0), a strided token
  for (const KernelChoice& kc : kernel_choices()) {
  SCOPED_TRACE(kc.label);
  UseKernels use(kc);
  Plan plan(c, on_cuda(pr));
  checked_kernels(plan, kc);
  auto run = [&](const Qkv& x) {
    DeviceCopy q(x.q), k(x.k), v(x.v);
    HostTensor out(pr.dtype, {pr.total_tokens(), 8, 64});
    DeviceCopy o(out);
    o.poison();
    attention(plan, q.view, k.view, v.view, o.view, TensorView{});
    return o.fetch(out);
  };
  const HostTensor a = run(clean), b = run(dirty);
  ASSERT_TRUE(a.all_finite());
  for (std::int64_t t = 0; t < pr.total_tokens(); ++t)
    for (int h = 0; h < 8; ++h)
      for (int d = 0; d < 64; ++d) {
        const std::int64_t i = (t * 8 + h) * 64 + d;
        const bool same_seq = t >= 700 && t < 1500;
        if (!same_seq || h >= 4)
          ASSERT_EQ(a.at(i), b.at(i)) << "token " << t << " head " << h;
        else if (h != 1)
          ASSERT_TRUE(std::isfinite(b.at(i))) << "token " << t << " head " << h;
      }
  }
}

TEST(Cuda, UnsupportedInputsAreClearErrors) {
  REQUIRE_GPU();
  auto expect_unsupported = [](const Problem& p, const Config& c, const char* part) {
    try {
      Plan plan(c, p);
      ADD_FAILURE() << "no error for " << part;
    } catch (const Error& e) {
      EXPECT_EQ(static_cast<int>(e.code()), static_cast<int>(ErrorCode::unsupported)) << e.what();
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  Config c;
  expect_unsupported(on_cuda(make_problem({100}, 4, 2, 128, DType::float32)), c, "float32");
  expect_unsupported(on_cuda(make_problem({100}, 4, 2, 96, DType::bfloat16)), c, "head_dim");
  Config c64;
  c64.block_size = 64;
  expect_unsupported(on_cuda(make_problem({100}, 4, 2, 128, DType::bfloat16)), c64, "block_size");
  // A misaligned view is refused at the call.
  const Problem pr = on_cuda(make_problem({64}, 4, 2, 64, DType::bfloat16));
  Plan plan(c, pr);
  Buffer buf(Device::cuda, 64 * 4 * 64 * 2 + 64);
  TensorView q = TensorView::contiguous(static_cast<char*>(buf.data()) + 2, DType::bfloat16, {64, 4, 64}, Device::cuda);
  TensorView k = TensorView::contiguous(buf.data(), DType::bfloat16, {64, 2, 64}, Device::cuda);
  try {
    estimate(plan, q, k);
    ADD_FAILURE() << "no error for a misaligned q";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("aligned"), std::string::npos) << e.what();
  }
  // A device mask whose row_offsets counts more entries than col_indices holds is refused
  // before a kernel reads it.
  TensorView kk = TensorView::contiguous(buf.data(), DType::bfloat16, {64, 2, 64}, Device::cuda);
  TensorView qq = TensorView::contiguous(buf.data(), DType::bfloat16, {64, 4, 64}, Device::cuda);
  const std::vector<std::int64_t> offsets{0, 1, 2, 3, 4};  // one query block, 4 heads, one entry each
  Buffer ro(Device::cuda, offsets.size() * sizeof(std::int64_t)), ci(Device::cuda, 16);
  ro.copy_from_host(offsets.data(), offsets.size() * sizeof(std::int64_t));
  BlockMask m;
  m.block_size = 128;
  m.num_heads = 4;
  m.num_rows = 4;
  m.device = Device::cuda;
  m.row_offsets = static_cast<const std::int64_t*>(ro.data());
  m.col_indices = static_cast<const std::int32_t*>(ci.data());
  m.num_entries = 3;
  try {
    sparse_attention(plan, qq, kk, kk, m, qq, TensorView{});
    ADD_FAILURE() << "no error for a mask that counts 4 entries in a col_indices of 3";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("col_indices holds (3)"), std::string::npos) << e.what();
  }
}

TEST(Cuda, TiesGoToTheLowerBlockIndex) {
  REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Problem pr = make_problem({2000}, 8, 2, 128, DType::bfloat16);
  Qkv x = random_qkv(pr, rng);
  for (std::int64_t t = 128; t < 2000; ++t)  // keys repeat with the period of a block
    for (int i = 0; i < 2 * 128; ++i) x.k.set(t * 256 + i, x.k.at((t % 128) * 256 + i));
  Config c;
  c.gamma = 0.5;
  c.min_budget_tokens = 3 * 128;
  // The proxy ranking alone: the heads' own columns follow stage 2's masses, whose exact ties the
  // GPU's chunked sums (rescaled as each chunk's running max moves) do not keep.
  c.head_columns = 0;
  c.exact_last_block = false;
  DeviceCopy q(x.q), k(x.k);
  for (const KernelChoice& kc : kernel_choices()) {
    SCOPED_TRACE(kc.label);
    UseKernels use(kc);
    Plan plan(c, on_cuda(pr));
    checked_kernels(plan, kc);
    const HostEstimate e = to_host(plan, estimate(plan, q.view, k.view));
    expect_ties_to_lower_index(e, plan.num_blocks(), 8);
  }
}

// The kernel request of the environment (PROXYATTN_KERNEL): bad text is an error that names the
// variable and the value; a request the device cannot serve is an error when the plan is built.
TEST(Cuda, KernelRequestsAreCheckedWhenParsed) {
  EXPECT_FALSE(kernels::parse_kernel_request("").arch.has_value());
  EXPECT_FALSE(kernels::parse_kernel_request("auto").arch.has_value());
  const kernels::KernelRequest r = kernels::parse_kernel_request("sm90,ctas=3,split=2");
  EXPECT_EQ(r.arch, kernels::Arch::sm90);
  EXPECT_EQ(r.ctas, 3);
  EXPECT_EQ(r.split, 2);
  EXPECT_FALSE(r.pack);
  EXPECT_TRUE(kernels::parse_kernel_request("sm90,pack=1").pack);
  EXPECT_EQ(kernels::parse_kernel_request("sm80").arch, kernels::Arch::sm80);
  for (const char* bad : {"hopper", "sm90,ctas=0", "sm90,split=9", "sm90,ctas=x", "sm80,foo=1", "sm90,", "sm90,pack=2"}) {
    try {
      kernels::parse_kernel_request(bad);
      ADD_FAILURE() << "no error for '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("PROXYATTN_KERNEL"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
  REQUIRE_GPU();
  if (sm90_runs()) GTEST_SKIP() << "sm90 runs here: the refusal of an sm90 request needs another GPU";
  UseKernels use({"sm90", kernels::parse_kernel_request("sm90")});
  try {
    Plan plan(Config{}, on_cuda(make_problem({100}, 4, 2, 128, DType::bfloat16)));
    ADD_FAILURE() << "no error for sm90 on a device without it";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sm90"), std::string::npos) << e.what();
  }
}
