// The CUDA backend on queries shorter than keys (chunked prefill, a later turn against a cached
// prefix) and on paged caches, against the CPU reference and against its own contiguous calls.
// Every test skips, saying so, where no CUDA device is present.
#include <cstdio>
#include <memory>
#include <string>

#include "chunk_util.hpp"
#include "core/plan_impl.hpp"
#include "cuda_util.hpp"
#include "mask_check.hpp"
#include "test_util.hpp"

using namespace testutil;

namespace {

// Chunks that start inside a block, on a block edge, one query, no query, the whole prompt;
// ragged batches mixing them; GQA 1, 4, 7 and 8; head dims 64, 128 and 256 (whose key tiles are
// half a block).
const std::vector<ChunkCase> kCases = {
    {{300}, {1000}, 8, 2, 128, DType::bfloat16},
    {{256}, {640}, 4, 4, 64, DType::float16},
    {{1}, {777}, 7, 1, 128, DType::bfloat16},
    {{1}, {1}, 4, 1, 64, DType::float16},
    {{500}, {500}, 8, 1, 128, DType::bfloat16},
    {{200, 0, 1, 60, 129, 333}, {900, 50, 16, 60, 257, 2000}, 8, 2, 128, DType::bfloat16},
    {{70, 1, 190}, {1300, 64, 450}, 8, 2, 256, DType::float16},
    {{400, 33}, {1500, 700}, 6, 3, 64, DType::bfloat16},
};

Config config(double gamma) {
  Config c;
  c.gamma = gamma;
  c.min_budget_tokens = 128;
  c.head_columns = 2;
  return c;
}

struct Outputs {
  HostTensor out, lse;
};

// Dense (mask null) or sparse attention of a chunk on the reference.
Outputs reference(const Problem& pr, const Config& c, const ChunkRun& r, const BlockMask* mask) {
  Config rc = c;
  rc.backend = Backend::cpu_reference;
  Plan plan(rc, pr);
  const std::int64_t nq = pr.total_tokens();
  Outputs o{HostTensor(pr.dtype, {nq, pr.q_heads, pr.head_dim}), HostTensor(DType::float32, {pr.q_heads, nq})};
  if (mask)
    sparse_attention(plan, r.q.view(), r.x.k.view(), r.x.v.view(), *mask, o.out.view(), o.lse.view());
  else
    dense_attention(plan, r.q.view(), r.x.k.view(), r.x.v.view(), o.out.view(), o.lse.view());
  return o;
}

void expect_close(const Outputs& g, const Outputs& want, const std::string& label, const std::string& kernels) {
  ASSERT_TRUE(g.out.all_finite()) << label << ": unwritten or non-finite output";
  if (want.out.numel() == 0) return;
  const double err = rel_error(g.out, want.out), lse_err = lse_error(g.lse, want.lse);
  EXPECT_LT(err, 1e-2) << label;
  EXPECT_LT(lse_err, 1e-3) << label;
  std::printf("  %s: %s, output error %.1e, lse error %.1e\n", label.c_str(), kernels.c_str(), err, lse_err);
  std::fflush(stdout);
}

// The chunk on the GPU; keys and values contiguous, or scattered into pages of `page` tokens.
struct GpuChunk {
  Plan plan;
  DeviceCopy q, k, v;
  std::unique_ptr<DeviceCopy> kc, vc, table;  // paged
  KvCache cache() const { return {kc->view, vc->view, table->view}; }
  GpuChunk(const Config& c, const ChunkRun& r, int page, std::mt19937_64& rng)
      : plan(c, on_cuda(paged_problem(r.part, page))), q(r.q), k(r.x.k), v(r.x.v) {
    if (page > 0) {
      const Paged p = page_out(r.x.k, r.x.v, r.part, page, rng);
      kc = std::make_unique<DeviceCopy>(p.k);
      vc = std::make_unique<DeviceCopy>(p.v);
      table = std::make_unique<DeviceCopy>(p.table);
    }
  }
  static Problem paged_problem(Problem p, int page) {
    p.page_size = page;
    return p;
  }
  bool paged() const { return kc != nullptr; }
  HostEstimate estimate() {
    return to_host(plan, paged() ? proxyattn::estimate(plan, q.view, KvCache{kc->view, {}, table->view})
                                 : proxyattn::estimate(plan, q.view, k.view));
  }
  // kind: 0 dense, 1 sparse over `mask`, 2 the whole layer (estimate + sparse).
  Outputs run(int kind, const BlockMask* mask) {
    const Problem& pr = plan.problem();
    const std::int64_t nq = pr.total_tokens();
    Outputs o{HostTensor(pr.dtype, {nq, pr.q_heads, pr.head_dim}), HostTensor(DType::float32, {pr.q_heads, nq})};
    DeviceCopy out(o.out), lse(o.lse);
    out.poison();
    lse.poison();
    if (paged()) {
      if (kind == 0) dense_attention(plan, q.view, cache(), out.view, lse.view);
      if (kind == 1) sparse_attention(plan, q.view, cache(), *mask, out.view, lse.view);
      if (kind == 2) attention(plan, q.view, cache(), out.view, lse.view);
    } else {
      if (kind == 0) dense_attention(plan, q.view, k.view, v.view, out.view, lse.view);
      if (kind == 1) sparse_attention(plan, q.view, k.view, v.view, *mask, out.view, lse.view);
      if (kind == 2) attention(plan, q.view, k.view, v.view, out.view, lse.view);
    }
    synchronize(Device::cuda);
    return {out.fetch(o.out), lse.fetch(o.lse)};
  }
};

}  // namespace

// Dense attention of a chunk and ProxyAttn at gamma = 1 (every causal block) equal the reference's
// dense attention; on the GPU, gamma = 1 gives its dense kernel's bytes.
TEST(CudaChunked, DenseAndGammaOneMatchTheReference) {
  REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  for (const ChunkCase& c : kCases) {
    SCOPED_TRACE(describe(c) + " seed " + std::to_string(seed));
    const ChunkRun r = make_run(c, rng);
    const Outputs want = reference(r.part, config(1.0), r, nullptr);
    for (const KernelChoice& kc : kernel_choices()) {
      UseKernels use(kc);
      GpuChunk g(config(1.0), r, 0, rng);
      const Outputs dense = g.run(0, nullptr);
      expect_close(dense, want, describe(c) + " dense, " + kc.label, checked_kernels(g.plan, kc));
      const Outputs full = g.run(2, nullptr);
      EXPECT_EQ(full.out.bytes, dense.out.bytes) << "gamma 1 must give dense attention exactly, " << kc.label;
      EXPECT_DOUBLE_EQ(g.estimate().density(), 1.0) << kc.label;
    }
  }
}

// The GPU estimate of a chunk against the reference's stage quantities (near-ties aside), and
// sparse attention over the reference's mask against the reference.
TEST(CudaChunked, EstimateAndSparseMatchTheReference) {
  REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  for (const ChunkCase& c : kCases)
    for (int variant = 0; variant < 2; ++variant) {
      Config cfg = config(0.85);
      cfg.stride = variant ? 8 : 4;
      cfg.exact_last_block = variant == 1;
      cfg.budget_mode = variant ? BudgetMode::last_row_count : BudgetMode::row_ratio;
      SCOPED_TRACE(describe(c) + " variant " + std::to_string(variant) + " seed " + std::to_string(seed));
      const ChunkRun r = make_run(c, rng);
      Config rc = cfg;
      rc.backend = Backend::cpu_reference;
      Plan ref(rc, r.part);
      const HostEstimate re = to_host(ref, estimate(ref, r.q.view(), r.x.k.view()));
      const BlockMask mask = re.mask.view();
      const MaskOnGpu gm(re.mask);
      const Outputs want = reference(r.part, cfg, r, &mask);
      for (const KernelChoice& kc : kernel_choices()) {
        UseKernels use(kc);
        GpuChunk g(cfg, r, 0, rng);
        const std::string kernels = checked_kernels(g.plan, kc);
        const MaskCheck check = check_estimate(ref, r.q.view(), r.x.k.view(), g.estimate(), &re, 5e-2);
        EXPECT_TRUE(check.failures.empty()) << kc.label << ": " << check.report();
        EXPECT_GE(check.rows_equal, check.rows_checked * 9 / 10) << kc.label << ": " << check.report();
        std::printf("  %s variant %d, %s: %s, %s\n", describe(c).c_str(), variant, kc.label.c_str(), kernels.c_str(),
                    check.report().c_str());
        expect_close(g.run(1, &gm.view), want, describe(c) + " sparse, " + kc.label, kernels);
      }
    }
}

// The last chunk of a prompt keeps the one-call mask in every row that holds only its queries:
// blocks keep absolute positions on the GPU as on the CPU.
TEST(CudaChunked, LastChunkKeepsTheOneCallMask) {
  REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  for (const ChunkCase& c : kCases) {
    SCOPED_TRACE(describe(c) + " seed " + std::to_string(seed));
    const ChunkRun r = make_run(c, rng);
    DeviceCopy q(r.x.q), k(r.x.k);
    for (const KernelChoice& kc : kernel_choices()) {
      SCOPED_TRACE(kc.label);
      UseKernels use(kc);
      GpuChunk part(config(0.8), r, 0, rng);
      const HostEstimate ep = part.estimate();
      Plan whole(config(0.8), on_cuda(r.whole));
      const HostEstimate ew = to_host(whole, estimate(whole, q.view, k.view));
      expect_whole_rows_as_one_call(part.plan.impl(), ep, whole.impl(), ew);
    }
  }
}

// Paged keys and values give the contiguous call's masks and outputs for pages that divide the
// block (packed first for the sm90 kernel where shorter than its key tile), equal it, or span two
// blocks; the pages shuffled, spare pages NaN.
TEST(CudaPaged, EqualsContiguous) {
  REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  for (const ChunkCase& c : kCases)
    for (int page : {16, 128, 8, 256, 64, 1, 4, 32}) {
      const std::string label = describe(c) + " page " + std::to_string(page);
      SCOPED_TRACE(label + " seed " + std::to_string(seed));
      const ChunkRun r = make_run(c, rng);
      for (const KernelChoice& kc : kernel_choices()) {
        SCOPED_TRACE(kc.label);
        UseKernels use(kc);
        GpuChunk flat(config(0.85), r, 0, rng), paged(config(0.85), r, page, rng);
        const std::string kernel_flat = checked_kernels(flat.plan, kc), kernel = checked_kernels(paged.plan, kc);
        const HostEstimate ef = flat.estimate(), ep = paged.estimate();
        EXPECT_EQ(ep.mask.row_offsets, ef.mask.row_offsets);
        EXPECT_EQ(ep.mask.col_indices, ef.mask.col_indices);
        EXPECT_EQ(ep.budget_blocks, ef.budget_blocks);
        const bool same = kernels::plan_kernels(flat.plan).attention == kernels::plan_kernels(paged.plan).attention;
        for (int kind : {0, 2}) {
          const Outputs want = flat.run(kind, nullptr), got = paged.run(kind, nullptr);
          ASSERT_TRUE(got.out.all_finite()) << "kind " << kind << ": a spare page was read or a row left unwritten";
          if (same)
            EXPECT_EQ(got.out.bytes, want.out.bytes) << "kind " << kind << ", " << kernel;
          else if (want.out.numel() > 0)
            EXPECT_LT(rel_error(got.out, want.out), 1e-2) << "kind " << kind << ", " << kernel;
          std::printf("  %s kind %d: %s (contiguous: %s)\n", label.c_str(), kind, kernel.c_str(), kernel_flat.c_str());
        }
      }
    }
}

// A device table's entries are not read by the API layer: an entry outside the cache must read
// as zeros in every kernel, never outside the cache (compute-sanitizer checks the "never").
TEST(CudaPaged, EntriesOutsideTheCacheReadNothingOutside) {
  REQUIRE_GPU();
  std::mt19937_64 rng(fresh_seed());
  const ChunkCase c{{200}, {700}, 8, 2, 128, DType::bfloat16};
  for (int page : {16, 128, 2}) {
    const ChunkRun r = make_run(c, rng);
    Problem pr = r.part;
    pr.page_size = page;
    Paged p = page_out(r.x.k, r.x.v, r.part, page, rng);
    reinterpret_cast<std::int32_t*>(p.table.bytes.data())[1] = 1 << 30;
    DeviceCopy q(r.q), k(p.k), v(p.v), t(p.table);
    for (const KernelChoice& kc : kernel_choices()) {
      UseKernels use(kc);
      Plan plan(config(0.9), on_cuda(pr));
      checked_kernels(plan, kc);
      HostTensor out(pr.dtype, {pr.total_tokens(), 8, 128});
      DeviceCopy o(out);
      attention(plan, q.view, KvCache{k.view, v.view, t.view}, o.view, TensorView{});
      dense_attention(plan, q.view, KvCache{k.view, v.view, t.view}, o.view, TensorView{});
      synchronize(Device::cuda);
      EXPECT_TRUE(o.fetch(out).all_finite()) << "page " << page << ", " << kc.label;
    }
  }
}

TEST(CudaPaged, UnsupportedPageSizeIsAClearError) {
  REQUIRE_GPU();
  Problem p = on_cuda(chunked_problem({10}, {300}, 8, 2, 128, DType::bfloat16));
  p.page_size = 48;
  expect_error([&] { Plan plan(Config{}, p); }, ErrorCode::unsupported, {"page_size", "divides 128", "48"});
}
