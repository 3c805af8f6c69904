// The CUDA backend's view of a plan: per-sequence tables (host copies, uploaded once by the
// plan) and the carving of the workspace into typed regions. Everything is sized here, at plan
// time, so that the run calls never allocate.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/plan_impl.hpp"

namespace proxyattn::detail::cuda {

constexpr int kBlock = 128;          // the only block size the CUDA kernels take
constexpr int kStage2Chunk = 8;      // key blocks per stage-2 CTA
constexpr int kMaxBlocks = 8192;     // longest sequence: 8192 blocks (1M tokens) for the in-CTA sorts

struct Tables {  // host copies, uploaded into the workspace by prepare()
  std::vector<std::int32_t> cu_seqlens, block_offset, strided_offset, chunk_offset, block_seq, chunk_seq;
  std::int64_t total_strided = 0, total_chunks = 0;
  int max_blocks = 0;       // largest Nb of the batch
  int sort_size = 1;        // next power of two >= max_blocks
};

struct Regions {  // device pointers into the workspace
  std::int32_t *cu_seqlens, *block_offset, *strided_offset, *chunk_offset, *block_seq, *chunk_seq;
  std::int32_t* budget;
  std::int64_t *kept, *counts, *row_offsets;
  std::int32_t* col_indices;
  float* mass;
  std::int32_t* head_order;  // [q_heads][num_blocks]: per head and sequence, its blocks by stage-2
                             // mass, largest first (the order exact_last_block and head_columns use)
  float* partial;   // [total_chunks][q_heads][kBlock][2]: stage-2 (max, sum) per row and chunk
  float2* block_part;  // [total_chunks][q_heads][kStage2Chunk][kBlock]: Hopper stage 2's (max, sum)
                       // per key block and row; sized only where that kernel runs (backend.cu,
                       // stage2_device)
  float* row_lse;   // [num_seqs][q_heads][kBlock]: stage 2's log-sum-exp (base 2) per row
  void *qbar, *kbar;  // [groups][total_strided][head_dim], input dtype
  std::int32_t *sched_keys, *sched_rows, *sched_keys_sorted, *sched_rows_sorted;
  void* scan_temp;
  std::size_t scan_temp_bytes;
  void* sort_temp;
  std::size_t sort_temp_bytes;
};

Tables make_tables(const Plan::Impl& plan);
// Carves `base` (null: only sizes) and returns the bytes needed.
std::size_t carve(const Plan::Impl& plan, const Tables& t, void* base, Regions* out);

}  // namespace proxyattn::detail::cuda
