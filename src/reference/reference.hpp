// The reference backend's stages, exposed so that the tests can check each one against its
// brute-force definition. Double precision, simple loops, no shortcuts: this is the oracle.
#pragma once

#include <cstdint>
#include <vector>

#include "proxyattn/tensor.hpp"

namespace proxyattn::detail::reference {

// One sequence of the batch: its queries, and its keys when they are more (the queries are then
// the last `len` positions of the keys; -1: the keys are the queries' own tokens).
struct Seq {
  std::int64_t begin = 0;  // first query token in the packed batch
  std::int64_t len = 0;
  std::int64_t kv_begin = -1;
  std::int64_t kv_len = -1;
  const std::int32_t* pages = nullptr;  // paged keys: the sequence's row of the block table
  int page_size = 0;
  std::int64_t keys() const { return kv_len < 0 ? len : kv_len; }
  std::int64_t offset() const { return keys() - len; }  // the position of the first query
  // The row of K that holds key position t.
  std::int64_t key_token(std::int64_t t) const {
    if (pages) return static_cast<std::int64_t>(pages[t / page_size]) * page_size + t % page_size;
    return (kv_len < 0 ? begin : kv_begin) + t;
  }
};

// Stage 1 for one sequence and proxy group j of g: A[m * nb + n] for n <= m, zero above, over
// the nb key blocks; rows of blocks that hold no strided query stay zero.
std::vector<double> proxy_block_scores(const TensorView& q, const TensorView& k, Seq seq, int group,
                                       int groups, int stride, int block, double scale);

// Stage 2 for one head: the mean over the last min(block, len) queries of the probability in
// each key block; sums to 1 (all zero when the sequence has no query).
std::vector<double> head_block_mass(const TensorView& q, const TensorView& k, Seq seq, int head,
                                    int gqa_ratio, int block, double scale);

// k_h: the smallest count of largest masses whose sum reaches gamma of the total.
std::int64_t budget_blocks(const std::vector<double>& mass, double gamma);

// A head's own ranking of the key blocks: indices by stage-2 mass, largest first (ties: lower
// index first; NaN last).
std::vector<std::int32_t> mass_order(const std::vector<double>& mass);

// budget_mode = row_mass: row m's count, k_h's rule on the masses of blocks 0..m (rules.hpp).
std::int64_t row_mass_budget(const std::vector<double>& mass, const std::vector<std::int32_t>& order, std::int64_t m,
                             double gamma);

// Stage 3 for one row: the forced blocks, then the blocks of `preferred` that are causal (n <= m)
// in their order, then the best-ranked others of scores[0..m] (ties: lower index first), up to
// `count` in all; ascending.
std::vector<std::int32_t> select_blocks(const double* scores, std::int64_t m, std::int64_t count,
                                        bool keep_sink, const std::vector<std::int32_t>& preferred = {});

// What stage 3 prefers for head h in query block m of nb: with exact_last_block the last block
// takes the head's whole mass order; other blocks take its first min(head_columns, k_h) blocks.
std::vector<std::int32_t> preferred_blocks(const std::vector<std::int32_t>& order, std::int64_t k_h,
                                           std::int64_t m, std::int64_t nb, bool exact_last_block,
                                           int head_columns);

}  // namespace proxyattn::detail::reference
