// Queries shorter than keys (chunked prefill, a later turn against a cached prefix): every stage
// on the reference and the fast CPU backend, against the whole prompt computed in one call.
#include <algorithm>
#include <string>

#include "core/plan_impl.hpp"
#include "chunk_util.hpp"
#include "test_util.hpp"

using namespace testutil;

namespace {

Config config(Backend b, double gamma) {
  Config c;
  c.block_size = 16;
  c.stride = 4;
  c.min_budget_tokens = 16;  // one block, so that the masks are sparse
  c.head_columns = 2;
  c.gamma = gamma;
  c.backend = b;
  return c;
}

// Chunks that start inside a block, on a block edge, one query, no query, the whole prompt, a
// ragged batch mixing them; GQA 1, 4 and 7; head dims 32 to 128.
const std::vector<ChunkCase> kCases = {
    {{45}, {300}, 4, 1, 64, DType::float32},
    {{128}, {256}, 4, 4, 32, DType::float32},
    {{1}, {77}, 7, 1, 64, DType::bfloat16},
    {{1}, {1}, 4, 1, 64, DType::float32},
    {{200}, {200}, 8, 2, 64, DType::float16},
    {{17, 0, 1, 60, 33}, {40, 50, 16, 60, 250}, 8, 2, 128, DType::float32},
};

double bound(DType dt) { return dt == DType::float32 ? 1e-5 : 1e-2; }

}  // namespace

// Dense attention of a chunk equals the whole prompt's last rows, on both backends; so does
// ProxyAttn at gamma = 1, which keeps every causal block.
TEST(Chunked, DenseAndGammaOneEqualTheWholePromptsLastRows) {
  const std::uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  for (const ChunkCase& c : kCases)
    for (Backend b : {Backend::cpu_reference, Backend::cpu}) {
      SCOPED_TRACE(describe(c) + (b == Backend::cpu ? " cpu" : " reference") + " seed " + std::to_string(seed));
      const ChunkRun r = make_run(c, rng);
      const std::int64_t n = r.whole.total_tokens(), nq = r.part.total_tokens();
      Plan whole(config(b, 1.0), r.whole), part(config(b, 1.0), r.part);
      HostTensor ow(c.dtype, {n, c.hq, c.dim}), lw(DType::float32, {c.hq, n});
      dense_attention(whole, r.x.q.view(), r.x.k.view(), r.x.v.view(), ow.view(), lw.view());
      const HostTensor want = last_rows(ow, r.whole, r.part), want_lse = last_lse(lw, r.whole, r.part);
      HostTensor o(c.dtype, {nq, c.hq, c.dim}), l(DType::float32, {c.hq, nq});
      for (int pass = 0; pass < 2; ++pass) {
        o.poison(), l.poison();
        if (pass == 0)
          dense_attention(part, r.q.view(), r.x.k.view(), r.x.v.view(), o.view(), l.view());
        else
          attention(part, r.q.view(), r.x.k.view(), r.x.v.view(), o.view(), l.view());
        ASSERT_TRUE(o.all_finite() && l.all_finite()) << (pass ? "gamma 1" : "dense") << ": unwritten output";
        if (nq > 0) EXPECT_LT(rel_error(o, want), bound(c.dtype)) << (pass ? "gamma 1" : "dense");
        if (nq > 0) EXPECT_LT(rel_error(l, want_lse), 1e-5) << (pass ? "gamma 1" : "dense") << " lse";
      }
      const HostEstimate e = to_host(part, estimate(part, r.q.view(), r.x.k.view()));
      EXPECT_DOUBLE_EQ(e.density(), 1.0);
      for (int s = 0; s < r.part.num_seqs(); ++s)  // a sequence with no query has no budget
        if (r.part.cu_seqlens[s + 1] == r.part.cu_seqlens[s])
          for (int h = 0; h < c.hq; ++h) EXPECT_EQ(e.budget_blocks[s * c.hq + h], 0) << "seq " << s;
    }
}

// The last chunk of a prompt gets the one-call mask in every row the chunk fills from its first
// query on (its budgets come from the same last queries, its proxy rows from the same strided
// queries); only a first row that starts inside a block can differ (fewer strided queries).
TEST(Chunked, LastChunkKeepsTheOneCallMaskInItsWholeBlocks) {
  const std::uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  for (const ChunkCase& c : kCases)
    for (Backend b : {Backend::cpu_reference, Backend::cpu}) {
      SCOPED_TRACE(describe(c) + (b == Backend::cpu ? " cpu" : " reference") + " seed " + std::to_string(seed));
      const ChunkRun r = make_run(c, rng);
      Plan whole(config(b, 0.8), r.whole), part(config(b, 0.8), r.part);
      const HostEstimate ew = to_host(whole, estimate(whole, r.x.q.view(), r.x.k.view()));
      const HostEstimate ep = to_host(part, estimate(part, r.q.view(), r.x.k.view()));
      const Plan::Impl &pw = whole.impl(), &pp = part.impl();
      for (int s = 0; s < r.part.num_seqs(); ++s) {
        const std::int64_t q_len = pp.seq_len(s);
        for (int h = 0; h < c.hq; ++h) {
          const std::size_t i = static_cast<std::size_t>(s) * c.hq + h;
          if (q_len >= 16) EXPECT_EQ(ep.budget_blocks[i], ew.budget_blocks[i]) << "seq " << s << " head " << h;
        }
      }
      expect_whole_rows_as_one_call(pp, ep, pw, ew);
    }
}

// The fast CPU backend against the reference on chunks: the same masks (up to rare near-ties),
// each row causal and ascending, and the same attention over one mask.
TEST(Chunked, CpuMatchesReference) {
  const std::uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  for (const ChunkCase& c : kCases) {
    SCOPED_TRACE(describe(c) + " seed " + std::to_string(seed));
    const ChunkRun r = make_run(c, rng);
    Plan fast(config(Backend::cpu, 0.8), r.part), ref(config(Backend::cpu_reference, 0.8), r.part);
    const HostEstimate ef = to_host(fast, estimate(fast, r.q.view(), r.x.k.view()));
    const HostEstimate er = to_host(ref, estimate(ref, r.q.view(), r.x.k.view()));
    ASSERT_EQ(ef.mask.num_rows(), fast.mask_rows());
    EXPECT_EQ(ef.budget_blocks, er.budget_blocks);
    EXPECT_EQ(ef.kept_blocks, er.kept_blocks);
    const Plan::Impl& p = fast.impl();
    std::int64_t equal = 0;
    for (int s = 0; s < r.part.num_seqs(); ++s)
      for (std::int64_t r_ = 0; r_ < p.seq_blocks(s); ++r_)
        for (int h = 0; h < c.hq; ++h) {
          const std::int64_t row = (p.block_offset[s] + r_) * c.hq + h, m = p.first_block(s) + r_;
          const std::vector<std::int32_t> got = mask_row(ef.mask, row), want = mask_row(er.mask, row);
          ASSERT_FALSE(got.empty());
          EXPECT_TRUE(std::is_sorted(got.begin(), got.end()) && got.front() >= 0 && got.back() == m)
              << "row " << row << ": ascending, causal, with its diagonal";
          equal += got == want;
        }
    EXPECT_GE(equal, fast.mask_rows() * 95 / 100) << equal << " of " << fast.mask_rows() << " rows equal";
    const std::int64_t nq = r.part.total_tokens();
    HostTensor of(c.dtype, {nq, c.hq, c.dim}), orf = of, lf(DType::float32, {c.hq, nq}), lr = lf;
    of.poison(), orf.poison(), lf.poison(), lr.poison();
    sparse_attention(fast, r.q.view(), r.x.k.view(), r.x.v.view(), er.mask.view(), of.view(), lf.view());
    sparse_attention(ref, r.q.view(), r.x.k.view(), r.x.v.view(), er.mask.view(), orf.view(), lr.view());
    ASSERT_TRUE(of.all_finite() && lf.all_finite());
    if (nq > 0) EXPECT_LT(rel_error(of, orf), bound(c.dtype));
    if (nq > 0) EXPECT_LT(rel_error(lf, lr), 1e-5);
  }
}

// Bad key packings and tensors of the wrong length name what is wrong.
TEST(Chunked, ErrorsNameTheArgument) {
  const auto bad = ErrorCode::invalid_argument;
  const Config c = config(Backend::cpu, 0.9);
  Problem p = chunked_problem({10, 5}, {20, 30}, 4, 2, 16, DType::float32);
  p.cu_seqlens_k = {0, 20};
  expect_error([&] { Plan plan(c, p); }, bad, {"cu_seqlens_k", "3"});
  p.cu_seqlens_k = {1, 20, 50};
  expect_error([&] { Plan plan(c, p); }, bad, {"cu_seqlens_k[0]"});
  p.cu_seqlens_k = {0, 30, 20};
  expect_error([&] { Plan plan(c, p); }, bad, {"cu_seqlens_k", "non-decreasing"});
  p.cu_seqlens_k = {0, 8, 40};
  expect_error([&] { Plan plan(c, p); }, bad, {"sequence 0", "10 queries", "8 keys"});

  p = chunked_problem({10, 5}, {20, 30}, 4, 2, 16, DType::float32);
  Plan plan(c, p);
  std::mt19937_64 rng(fresh_seed());
  HostTensor q = random_tensor(DType::float32, {15, 4, 16}, rng), k = random_tensor(DType::float32, {50, 2, 16}, rng);
  HostTensor short_k = random_tensor(DType::float32, {15, 2, 16}, rng), out(DType::float32, {15, 4, 16});
  expect_error([&] { estimate(plan, q.view(), short_k.view()); }, bad, {"k must have shape [50, 2, 16]"});
  expect_error([&] { dense_attention(plan, q.view(), k.view(), short_k.view(), out.view(), TensorView{}); }, bad,
               {"v must have shape [50, 2, 16]"});
  expect_error([&] { estimate(plan, k.view(), k.view()); }, bad, {"q must have shape [15, 4, 16]"});
  HostTensor bad_lse(DType::float32, {4, 50});
  expect_error([&] { dense_attention(plan, q.view(), k.view(), k.view(), out.view(), bad_lse.view()); }, bad,
               {"lse must have shape [4, 15]"});
}

// Paged keys and values give the contiguous call's masks and outputs, whatever the page size
// (dividing the block, equal to it, larger, or neither) and however the pages are shuffled.
TEST(Paged, EqualsContiguous) {
  const std::uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  for (const ChunkCase& c : kCases)
    for (Backend b : {Backend::cpu_reference, Backend::cpu})
      for (int page : {16, 8, 5, 32}) {
        SCOPED_TRACE(describe(c) + (b == Backend::cpu ? " cpu" : " reference") + " page " + std::to_string(page) +
                     " seed " + std::to_string(seed));
        const ChunkRun r = make_run(c, rng);
        Problem paged_pr = r.part;
        paged_pr.page_size = page;
        const Paged cache = page_out(r.x.k, r.x.v, r.part, page, rng);
        const KvCache kv{cache.k.view(), cache.v.view(), cache.table.view()};
        Plan flat(config(b, 0.8), r.part), paged(config(b, 0.8), paged_pr);
        const HostEstimate ef = to_host(flat, estimate(flat, r.q.view(), r.x.k.view()));
        const HostEstimate ep = to_host(paged, estimate(paged, r.q.view(), KvCache{cache.k.view(), {}, cache.table.view()}));
        EXPECT_EQ(ep.mask.row_offsets, ef.mask.row_offsets);
        EXPECT_EQ(ep.mask.col_indices, ef.mask.col_indices);
        EXPECT_EQ(ep.budget_blocks, ef.budget_blocks);
        const std::int64_t nq = r.part.total_tokens();
        HostTensor of(c.dtype, {nq, c.hq, c.dim}), op = of, lf(DType::float32, {c.hq, nq}), lp = lf;
        for (int pass = 0; pass < 3; ++pass) {
          of.poison(), op.poison(), lf.poison(), lp.poison();
          if (pass == 0) {
            attention(flat, r.q.view(), r.x.k.view(), r.x.v.view(), of.view(), lf.view());
            attention(paged, r.q.view(), kv, op.view(), lp.view());
          } else if (pass == 1) {
            dense_attention(flat, r.q.view(), r.x.k.view(), r.x.v.view(), of.view(), lf.view());
            dense_attention(paged, r.q.view(), kv, op.view(), lp.view());
          } else {
            sparse_attention(flat, r.q.view(), r.x.k.view(), r.x.v.view(), ef.mask.view(), of.view(), lf.view());
            sparse_attention(paged, r.q.view(), kv, ef.mask.view(), op.view(), lp.view());
          }
          ASSERT_TRUE(op.all_finite() && lp.all_finite()) << "pass " << pass << ": a spare page was read";
          if (nq > 0) EXPECT_LT(rel_error(op, of), 1e-6) << "pass " << pass;
          if (nq > 0) EXPECT_LT(rel_error(lp, lf), 1e-6) << "pass " << pass;
        }
      }
}

TEST(Paged, ErrorsNameTheArgument) {
  const auto bad = ErrorCode::invalid_argument;
  const Config c = config(Backend::cpu, 0.9);
  std::mt19937_64 rng(fresh_seed());
  Problem p = chunked_problem({10, 5}, {20, 30}, 4, 2, 16, DType::float32);
  p.page_size = 8;
  Problem no_k = p;
  no_k.cu_seqlens_k.clear();
  expect_error([&] { Plan plan(c, no_k); }, bad, {"cu_seqlens_k is required", "page_size 8"});
  Problem negative = p;
  negative.page_size = -1;
  expect_error([&] { Plan plan(c, negative); }, bad, {"page_size", "-1"});

  Plan plan(c, p);
  HostTensor q = random_tensor(DType::float32, {15, 4, 16}, rng), out(DType::float32, {15, 4, 16});
  HostTensor k = random_tensor(DType::float32, {9, 8, 2, 16}, rng);  // 9 pages of 8
  HostTensor table(DType::int32, {2, 4});
  auto* t = reinterpret_cast<std::int32_t*>(table.bytes.data());
  const std::int32_t pages[8] = {0, 1, 2, -1, 3, 4, 5, 6};  // 20 keys: 3 pages; 30 keys: 4 pages
  std::copy(pages, pages + 8, t);
  EXPECT_NO_THROW(dense_attention(plan, q.view(), KvCache{k.view(), k.view(), table.view()}, out.view(), TensorView{}));
  expect_error([&] { dense_attention(plan, q.view(), k.view(), k.view(), out.view(), TensorView{}); }, bad,
               {"paged", "KvCache"});
  t[5] = 9;
  expect_error([&] { estimate(plan, q.view(), KvCache{k.view(), {}, table.view()}); }, bad,
               {"kv.block_table[1][1] = 9", "9 pages"});
  t[5] = 4;
  HostTensor narrow(DType::int32, {2, 3});
  expect_error([&] { estimate(plan, q.view(), KvCache{k.view(), {}, narrow.view()}); }, bad,
               {"kv.block_table has 3 pages", "sequence 1 has 30 keys"});
  HostTensor wide(DType::int64, {2, 4});
  expect_error([&] { estimate(plan, q.view(), KvCache{k.view(), {}, wide.view()}); }, bad, {"kv.block_table", "int32"});
  HostTensor bad_page = random_tensor(DType::float32, {9, 4, 2, 16}, rng);
  expect_error([&] { estimate(plan, q.view(), KvCache{bad_page.view(), {}, table.view()}); }, bad,
               {"kv.k must have shape [num_pages, 8, 2, 16]"});
  HostTensor fewer = random_tensor(DType::float32, {7, 8, 2, 16}, rng);
  expect_error([&] { dense_attention(plan, q.view(), KvCache{k.view(), fewer.view(), table.view()}, out.view(), TensorView{}); }, bad,
               {"kv.v must have as many pages as kv.k (9)"});
  Plan flat(c, chunked_problem({10, 5}, {20, 30}, 4, 2, 16, DType::float32));
  expect_error([&] { estimate(flat, q.view(), KvCache{k.view(), {}, table.view()}); }, bad, {"not paged"});
  EXPECT_EQ(plan.impl().block_table, nullptr);  // no call leaves its table behind
}
