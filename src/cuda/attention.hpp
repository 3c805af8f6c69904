// The attention kernels as the backend sees them: their parameters and their launchers'
// declarations, for both architectures. The kernels and the launchers' bodies are in
// sm80/attention.cuh and sm90/attention.cuh, which only the instantiation files generated from the
// kernel table (src/cuda/CMakeLists.txt) include. The files that choose and launch read this one:
// backend.cu, and kernels.cpp and sm90/tensor_maps.cpp, host code for the C++ compiler.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernel_table.hpp"
#include "cuda/layout.hpp"

namespace proxyattn::detail::cuda {

// A mask row is a query block m of a sequence, in absolute positions: its rows are positions
// 128 m .., of which those from q_off (= kv_len - q_len, the first query) to kv_len - 1 are
// queries, at tokens q_begin + position - q_off of q and out. Keys are positions 0 .. kv_len - 1,
// wherever KvRows puts them.
struct AttentionParams {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* lse;  // [q_heads, total_tokens] or null
  std::int64_t q_tok, q_head, k_tok, k_head, v_tok, v_head, o_tok, o_head;  // strides, elements
  const std::int64_t* row_offsets;  // null: dense causal
  const std::int32_t* col_indices;
  const std::int32_t* schedule;     // rows in the order to run them (backend.cu)
  const std::int32_t* block_seq;    // sequence of each global query block
  const std::int32_t* block_offset; // first global block of each sequence
  const std::int32_t* first_block;  // absolute query block of each sequence's first row
  const std::int32_t* cu_seqlens;   // queries
  KvRows kv;                        // keys and values (kv.cu_seqlens_k: their counts)
  std::int64_t total_tokens;        // queries of the batch
  std::int64_t total_kv_tokens;     // rows of the K and V views
  int q_heads, gqa_ratio;
  int num_rows;                     // mask rows (query blocks x heads)
  int tiles_per_block;              // set by the launcher: query tiles per 128-row block
  int num_items;                    // set by the launcher: num_rows * tiles_per_block
  float scale_log2;                 // softmax scale * log2(e)
};

// sm80: one CTA per (query tile, head) item, in schedule order.
template <class T, int D>
void launch_sparse_attention(AttentionParams p, cudaStream_t stream);

namespace sm90 {

constexpr int kTile = 128;  // query rows per tile, keys per mask block

// Keys per K/V tile: one mask block, or half of one at D = 256, where the accumulators of a
// 64 x 256 output and a 64 x 128 score tile would not fit in a thread's 240 registers.
constexpr int key_tile(int d) { return d == 256 ? 64 : kTile; }

// The three tensor maps of a launch: [tokens, heads, D] boxes of 128 tokens x 64 elements.
struct TileMaps {
  CUtensorMap q, k, v;
};

// Builds them from the operands' base pointers and strides (elements); an error naming the
// operand where the driver refuses one. Host code, tensor_maps.cpp.
void make_tile_maps(const AttentionParams& p, bool bf16, int head_dim, int kv_heads, TileMaps* maps);

// Whether the sparse attention of a problem fits the kernel's copies: token coordinates are
// 32-bit (one past the K/V view included: the coordinate of pages that read as zeros). Pages are
// read in place only where they hold whole K/V tiles (kernels.cpp packs shorter ones).
inline bool sm90_takes(std::int64_t total_tokens, std::int64_t total_kv_tokens) {
  constexpr std::int64_t kLimit = std::int64_t{1} << 31;
  return total_tokens < kLimit && total_kv_tokens < kLimit - 1;
}

// Whether the sm_90a build of this kernel is what runs on `device` (the current device). Asked
// once per device, so that a launch inside a stream capture makes no such query.
template <class T, int D>
bool kernel_available(int device);

// The persistent grid: `grid` CTAs (at most one per item) walking the schedule.
template <class T, int D>
void launch_sparse_attention_sm90(AttentionParams p, const TileMaps& maps, int grid, cudaStream_t stream);

}  // namespace sm90

// Instantiated once each in a file generated from the kernel table.
#define PROXYATTN_DECLARE_ATTENTION(T, D)                                                                  \
  extern template void launch_sparse_attention<T, D>(AttentionParams, cudaStream_t);                       \
  extern template bool sm90::kernel_available<T, D>(int);                                                  \
  extern template void sm90::launch_sparse_attention_sm90<T, D>(AttentionParams, const sm90::TileMaps&, int, \
                                                                cudaStream_t);
PROXYATTN_CUDA_KERNELS(PROXYATTN_DECLARE_ATTENTION)
#undef PROXYATTN_DECLARE_ATTENTION

}  // namespace proxyattn::detail::cuda
