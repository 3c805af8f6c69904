// Test helpers for queries shorter than keys and paged caches: chunked problems and their inputs,
// the rows of a whole prompt that a chunk holds, the comparison of a last chunk's mask with the
// whole prompt's, and keys and values scattered into shuffled pages.
#pragma once

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "core/plan_impl.hpp"
#include "test_util.hpp"

namespace testutil {

// A batch whose sequence s has kv[s] keys and q[s] queries (its last q[s] positions).
inline Problem chunked_problem(const std::vector<std::int32_t>& q, const std::vector<std::int32_t>& kv, int hq,
                               int hkv, int dim, DType dt) {
  Problem p = make_problem(q, hq, hkv, dim, dt);
  p.cu_seqlens_k = {0};
  for (auto l : kv) p.cu_seqlens_k.push_back(p.cu_seqlens_k.back() + l);
  return p;
}

// The tokens of sequence s's last q positions, copied out of the whole prompt's tensor.
inline HostTensor last_rows(const HostTensor& whole, const Problem& whole_pr, const Problem& pr) {
  const std::int64_t heads = whole.shape[1], dim = whole.shape[2];
  HostTensor t(whole.dtype, {pr.total_tokens(), heads, dim});
  for (int s = 0; s < pr.num_seqs(); ++s) {
    const std::int64_t q = pr.cu_seqlens[s + 1] - pr.cu_seqlens[s];
    const std::int64_t src = whole_pr.cu_seqlens[s + 1] - q, dst = pr.cu_seqlens[s];
    for (std::int64_t i = 0; i < q * heads * dim; ++i) t.set(dst * heads * dim + i, whole.at(src * heads * dim + i));
  }
  return t;
}

// Rows [first, first + count) of the lse [heads, total] of the whole prompt, per sequence.
inline HostTensor last_lse(const HostTensor& whole, const Problem& whole_pr, const Problem& pr) {
  const std::int64_t heads = whole.shape[0], n = whole.shape[1];
  HostTensor t(DType::float32, {heads, pr.total_tokens()});
  for (int s = 0; s < pr.num_seqs(); ++s) {
    const std::int64_t q = pr.cu_seqlens[s + 1] - pr.cu_seqlens[s];
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t i = 0; i < q; ++i)
        t.set(h * pr.total_tokens() + pr.cu_seqlens[s] + i, whole.at(h * n + whole_pr.cu_seqlens[s + 1] - q + i));
  }
  return t;
}

// A batch of chunks: sequence s has kv[s] keys, its queries the last q[s] positions.
struct ChunkCase {
  std::vector<std::int32_t> q, kv;
  int hq, hkv, dim;
  DType dtype;
};

inline std::string describe(const ChunkCase& c) {
  std::string s = "q/kv";
  for (std::size_t i = 0; i < c.q.size(); ++i) s += " " + std::to_string(c.q[i]) + "/" + std::to_string(c.kv[i]);
  return s + " hq " + std::to_string(c.hq) + " hkv " + std::to_string(c.hkv) + " dim " + std::to_string(c.dim) + " " +
         dtype_name(c.dtype);
}

// The whole prompt (every key position a query) and the chunk, with fresh random inputs.
struct ChunkRun {
  Problem whole, part;
  Qkv x;         // the whole prompt
  HostTensor q;  // the chunk's queries
};

inline ChunkRun make_run(const ChunkCase& c, std::mt19937_64& rng) {
  ChunkRun r{make_problem(c.kv, c.hq, c.hkv, c.dim, c.dtype), chunked_problem(c.q, c.kv, c.hq, c.hkv, c.dim, c.dtype),
             {}, {}};
  r.x = random_qkv(r.whole, rng);
  r.q = last_rows(r.x.q, r.whole, r.part);
  return r;
}

// Row `row` of a host mask: its kept key blocks.
inline std::vector<std::int32_t> mask_row(const HostBlockMask& m, std::int64_t row) {
  return {m.col_indices.begin() + m.row_offsets[row], m.col_indices.begin() + m.row_offsets[row + 1]};
}

// A chunk's mask (plan pp) against the whole prompt's (plan pw) in every row that holds only the
// chunk's queries, for the sequences with at least a block of queries (budgets from the same last
// queries): blocks keep absolute positions.
inline void expect_whole_rows_as_one_call(const Plan::Impl& pp, const HostEstimate& ep, const Plan::Impl& pw,
                                          const HostEstimate& ew) {
  const int heads = pp.problem.q_heads;
  const std::int64_t block = pp.config.block_size;
  for (int s = 0; s < pp.problem.num_seqs(); ++s) {
    if (pp.seq_len(s) < block) continue;  // fewer than a block of queries: a budget of its own
    for (std::int64_t i = 0; i < pp.seq_blocks(s); ++i) {
      const std::int64_t m = pp.first_block(s) + i;
      if (m * block < pp.q_offset(s)) continue;  // a row that starts inside the block
      for (int h = 0; h < heads; ++h)
        EXPECT_EQ(mask_row(ep.mask, (pp.block_offset[s] + i) * heads + h),
                  mask_row(ew.mask, (pw.block_offset[s] + m) * heads + h))
            << "seq " << s << " block " << m << " head " << h;
    }
  }
}

// K or V of a packed batch scattered into a cache of shuffled pages: the cache
// [num_pages, page_size, heads, dim] (two spare pages filled with NaN, never to be read) and the
// block table [num_seqs, max_pages + 1] (a spare column of -1).
struct Paged {
  HostTensor k, v, table;
};

inline Paged page_out(const HostTensor& k, const HostTensor& v, const Problem& pr, int page, std::mt19937_64& rng) {
  const std::int64_t heads = k.shape[1], dim = k.shape[2], row = heads * dim;
  const auto& cu = pr.kv_seqlens();
  std::int64_t pages = 0, widest = 0;
  for (int s = 0; s < pr.num_seqs(); ++s) {
    const std::int64_t need = (cu[s + 1] - cu[s] + page - 1) / page;
    pages += need;
    widest = std::max(widest, need);
  }
  std::vector<std::int32_t> order(pages + 2);
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<std::int32_t>(i);
  std::shuffle(order.begin(), order.end(), rng);
  Paged out{HostTensor(k.dtype, {pages + 2, page, heads, dim}), HostTensor(k.dtype, {pages + 2, page, heads, dim}),
            HostTensor(DType::int32, {pr.num_seqs(), widest + 1})};
  out.k.poison(), out.v.poison();
  auto* table = reinterpret_cast<std::int32_t*>(out.table.bytes.data());
  std::fill(table, table + pr.num_seqs() * (widest + 1), -1);
  std::int64_t next = 0;
  for (int s = 0; s < pr.num_seqs(); ++s)
    for (std::int64_t t = 0; t < cu[s + 1] - cu[s]; ++t) {
      if (t % page == 0) table[s * (widest + 1) + t / page] = order[next++];
      const std::int64_t dst = (static_cast<std::int64_t>(table[s * (widest + 1) + t / page]) * page + t % page) * row;
      for (std::int64_t i = 0; i < row; ++i) {
        out.k.set(dst + i, k.at((cu[s] + t) * row + i));
        out.v.set(dst + i, v.at((cu[s] + t) * row + i));
      }
    }
  return out;
}

}  // namespace testutil
