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

  // Per sequence: first token, length, and first global query block ([num_seqs + 1] entries).
  std::vector<std::int64_t> block_offset;
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

  std::int64_t seq_begin(int s) const { return problem.cu_seqlens[s]; }
  std::int64_t seq_len(int s) const { return problem.cu_seqlens[s + 1] - problem.cu_seqlens[s]; }
  std::int64_t seq_blocks(int s) const { return block_offset[s + 1] - block_offset[s]; }
  int group_size_q() const { return problem.q_heads / config.proxy_groups; }
  int group_size_kv() const { return problem.kv_heads / config.proxy_groups; }
  int gqa_ratio() const { return problem.q_heads / problem.kv_heads; }
};

}  // namespace proxyattn
