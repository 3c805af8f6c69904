// What a plan holds. Backends read the sequence tables here and write their results into the
// host vectors (CPU backends) or the device workspace (CUDA backend).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "proxyattn/buffer.hpp"
#include "proxyattn/plan.hpp"

namespace proxyattn {

struct Plan::Impl {
  Config config;
  Problem problem;
  Backend backend = Backend::cpu;
  float scale = 1.0f;

  // Per sequence ([num_seqs + 1] entries): the first global query block (mask row per head) and
  // the first global key block.
  std::vector<std::int64_t> block_offset;
  std::vector<std::int64_t> kv_block_offset;
  std::int64_t num_blocks = 0;
  std::int64_t mask_rows = 0;
  std::int64_t mask_capacity = 0;

  // CPU backends: the estimate lives here.
  std::vector<std::int64_t> row_offsets;
  std::vector<std::int32_t> col_indices;
  std::vector<std::int32_t> budget_blocks;
  std::vector<std::int64_t> kept_blocks;

  // CUDA backend: the device workspace, owned or borrowed, and the backend's own tables.
  Buffer owned_workspace;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  std::shared_ptr<void> backend_state;

  // Queries of sequence s: the first token in the packed q, and how many.
  std::int64_t seq_begin(int s) const { return problem.cu_seqlens[s]; }
  std::int64_t seq_len(int s) const { return problem.cu_seqlens[s + 1] - problem.cu_seqlens[s]; }
  // Keys of sequence s: the first token in the packed k and v, and how many.
  std::int64_t kv_begin(int s) const { return problem.kv_seqlens()[s]; }
  std::int64_t kv_len(int s) const { return problem.kv_seqlens()[s + 1] - problem.kv_seqlens()[s]; }
  // The position of the sequence's first query (its queries are the last seq_len positions).
  std::int64_t q_offset(int s) const { return kv_len(s) - seq_len(s); }
  // Mask rows (query blocks) of sequence s, and the absolute block index of the first one.
  std::int64_t seq_blocks(int s) const { return block_offset[s + 1] - block_offset[s]; }
  std::int64_t first_block(int s) const { return seq_len(s) ? q_offset(s) / config.block_size : 0; }
  // Key blocks of sequence s.
  std::int64_t kv_blocks(int s) const { return kv_block_offset[s + 1] - kv_block_offset[s]; }
  // Causal blocks of one head's rows of sequence s: row m sees m + 1 key blocks.
  std::int64_t causal_blocks(int s) const {
    const std::int64_t first = first_block(s), end = first + seq_blocks(s);
    return end * (end + 1) / 2 - first * (first + 1) / 2;
  }

  // Paged keys: the block table of the call under way (set by the API layer for the duration of
  // a call on a paged plan; the K and V views the backends get then span every page as tokens).
  const std::int32_t* block_table = nullptr;
  std::int64_t table_stride = 0;
  // The row of K and V that holds key position t of sequence s.
  std::int64_t kv_token(int s, std::int64_t t) const {
    if (!block_table) return kv_begin(s) + t;
    const std::int64_t page = problem.page_size;
    return static_cast<std::int64_t>(block_table[s * table_stride + t / page]) * page + t % page;
  }
  int group_size_q() const { return problem.q_heads / config.proxy_groups; }
  int group_size_kv() const { return problem.kv_heads / config.proxy_groups; }
  int gqa_ratio() const { return problem.q_heads / problem.kv_heads; }
};

}  // namespace proxyattn
