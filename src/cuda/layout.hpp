// The CUDA backend's view of a plan: per-sequence tables (host copies, uploaded once by the
// plan) and the carving of the workspace into typed regions. Everything is sized here, at plan
// time, so that the run calls never allocate.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/plan_impl.hpp"
#include "cuda/kernels.hpp"

namespace proxyattn::detail::cuda {

constexpr int kBlock = 128;          // the only block size the CUDA kernels take
constexpr int kStage2Chunk = 8;      // key blocks per stage-2 CTA
constexpr int kMaxBlocks = 8192;     // longest sequence: 8192 blocks (1M tokens) for the in-CTA sorts

// Per sequence s: its queries are tokens cu_seqlens[s] .. cu_seqlens[s + 1] of q and the last
// positions of its keys (cu_seqlens_k: the keys' packing, or only their counts when paged); its
// mask rows are the query blocks block_offset[s] .. block_offset[s + 1] - 1 of the batch, which are
// the absolute blocks first_block[s] .. of the sequence; its key blocks (stage 2's masses, the
// heads' orders) are kv_block_offset[s] .. of the batch. Strided positions (stage 1) and stage-2
// chunks run over the keys. For whole prompts, cu_seqlens_k = cu_seqlens, first_block = 0 and
// kv_block_offset = block_offset.
struct Tables {  // host copies, uploaded into the workspace by prepare()
  std::vector<std::int32_t> cu_seqlens, cu_seqlens_k, block_offset, first_block, kv_block_offset, strided_offset,
      chunk_offset, block_seq, chunk_seq;
  std::int64_t total_strided = 0, total_chunks = 0, total_kv_blocks = 0;
  int max_blocks = 0;       // most key blocks of a sequence of the batch
  int sort_size = 1;        // next power of two >= max_blocks
};

struct Regions {  // device pointers into the workspace
  std::int32_t *cu_seqlens, *cu_seqlens_k, *block_offset, *first_block, *kv_block_offset, *strided_offset,
      *chunk_offset, *block_seq, *chunk_seq;
  std::int32_t* budget;
  std::int64_t *kept, *counts, *row_offsets;
  std::int32_t* col_indices;
  float* mass;               // [q_heads][total_kv_blocks]: stage 2's block masses
  std::int32_t* head_order;  // [q_heads][total_kv_blocks]: per head and sequence, its blocks by stage-2
                             // mass, largest first (the order exact_last_block and head_columns use)
  float* partial;   // [total_chunks][q_heads][kBlock][2]: stage-2 (max, sum) per row and chunk
  float2* block_part;  // [total_chunks][q_heads][kStage2Chunk][kBlock]: stage 2's (max, sum) per key
                       // block and row
  float* row_lse;   // [num_seqs][q_heads][kBlock]: stage 2's log-sum-exp (base 2) per row
  void *qbar, *kbar;  // [groups][total_strided][head_dim], input dtype
  std::int32_t *sched_keys, *sched_rows, *sched_keys_sorted, *sched_rows_sorted;
  void* scan_temp;
  std::size_t scan_temp_bytes;
  void* sort_temp;
  std::size_t sort_temp_bytes;
  void *k_packed, *v_packed;  // Kernels::pack_pages: [total_kv_tokens][kv_heads][head_dim], input dtype
};

// Where key position t of sequence s lives in K and V: packed after cu_seqlens_k[s], or in the
// page block_table[s][t / page_size] of a paged cache (the token view of all its pages, `rows`
// tokens). -1 for a page outside the cache (a bad table entry on the device, where the API layer
// cannot read the table without a synchronisation): the loads then give zeros, never a read
// outside the cache.
struct KvRows {
  const std::int32_t* cu_seqlens_k;  // device, [num_seqs + 1]
  const std::int32_t* table;         // device block table, or null (contiguous keys)
  std::int64_t table_stride;         // entries per sequence row of the table
  int page_size;
  std::int64_t rows;                 // tokens of the K and V views
  __device__ __forceinline__ std::int64_t row(int s, int t) const {
    if (!table) return cu_seqlens_k[s] + t;
#ifdef __CUDA_ARCH__
    const std::int64_t page = __ldg(table + s * table_stride + t / page_size);
#else  // a host compiler: this header is also read by the backend's host-only files
    const std::int64_t page = table[s * table_stride + t / page_size];
#endif
    const std::int64_t r = page * page_size;
    return page >= 0 && r < rows ? r + t % page_size : -1;
  }
};

Tables make_tables(const Plan::Impl& plan);
// Carves `base` (null: only sizes) for the plan's kernels and returns the bytes needed.
std::size_t carve(const Plan::Impl& plan, const Tables& t, const Kernels& k, void* base, Regions* out);

}  // namespace proxyattn::detail::cuda
