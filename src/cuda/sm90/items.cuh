// The work of the sm90 attention kernel (sm90/attention.cuh): which items a CTA takes, what an
// item is (a (query block, head) row of the mask), and the K/V tiles of its row. The producer and
// the consumers walk them the same way, which the kernel's barrier counts rely on.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda/attention.hpp"

namespace proxyattn::detail::cuda::sm90 {

// Values that are the same in every lane, made visibly so for the compiler: loop bounds and
// branches around wgmma must be warp-uniform, or it serialises the wgmma pipeline.
__device__ __forceinline__ int uniform(int x) { return __shfl_sync(0xffffffffu, x, 0); }
__device__ __forceinline__ std::int64_t uniform(std::int64_t x) { return __shfl_sync(0xffffffffu, x, 0); }

// One work item: a (query block, head) row of the mask, in absolute positions of its sequence
// (attention.cuh, AttentionParams): rows 128 m .. of the query tile, of which those from q_off on
// are queries; keys 0 .. len - 1.
struct Item {
  const std::int32_t* cols;  // the row's first kept key block (null: dense, blocks 0..m)
  std::int64_t q_tok0;       // the token of q (and out) of the tile's row 0: may lie before the
                             // sequence (rows before q_off), even before the tensor
  std::int64_t kv_begin;     // first key token in the packed K and V (contiguous keys)
  int count;                 // entries in the row (dense: m + 1)
  int s, h, kvh, m, len;     // sequence, head, kv head, absolute query block, key positions
  int q_off;                 // the first query's position
};

__device__ __forceinline__ Item decode_item(const AttentionParams& p, int index) {
  const int row = uniform(__ldg(p.schedule + index));
  const int b = row / p.q_heads;
  const int s = uniform(__ldg(p.block_seq + b));
  Item it;
  it.h = row - b * p.q_heads;
  it.kvh = it.h / p.gqa_ratio;
  it.s = s;
  it.m = b - uniform(__ldg(p.block_offset + s)) + uniform(__ldg(p.first_block + s));
  const int q_begin = uniform(__ldg(p.cu_seqlens + s)), q_len = uniform(__ldg(p.cu_seqlens + s + 1)) - q_begin;
  const int kv_begin = uniform(__ldg(p.kv.cu_seqlens_k + s));
  it.len = uniform(__ldg(p.kv.cu_seqlens_k + s + 1)) - kv_begin;
  it.kv_begin = kv_begin;
  it.q_off = it.len - q_len;
  it.q_tok0 = static_cast<std::int64_t>(q_begin) - it.q_off + static_cast<std::int64_t>(it.m) * kTile;
  if (p.row_offsets) {
    const std::int64_t lo = uniform(__ldg(p.row_offsets + row)), hi = uniform(__ldg(p.row_offsets + row + 1));
    it.cols = p.col_indices + lo;
    it.count = static_cast<int>(std::min<std::int64_t>(hi - lo, INT32_MAX));
  } else {
    it.cols = nullptr;
    it.count = it.m + 1;
  }
  return it;
}

// The K/V tiles of an item: its kept key blocks in mask order, skipping indices outside [0, m]
// (a bad raw mask), exactly as the sm80 kernel's KeyTiles does; each block is kSub tiles
// of 128 / kSub keys, and a tile that starts past the sequence end is skipped. next() gives the
// tile's first key (in the sequence) or -1 at the end; the producer and the consumers walk the
// same tiles.
// Whole warps walk it (the producer and the consumers): the mask's indices come 32 at a time,
// lane i holding entry 32 k + i, and the next 32 are loaded a chunk ahead, so that a tile's index
// is one shuffle and not a load whose latency stands before the tile's copies (the producer) or
// in the chain from one tile's products to the next (the consumers).
template <int kSub>
struct KeyTiles {
  const std::int32_t* cols;  // the row's first entry (null: dense, blocks 0..m)
  int e = 0, count;          // next entry, entries in the row
  int m, len, n = -1, sub = kSub;
  int chunk = -1, ahead = -1;  // entries 32 k + lane and 32 (k + 1) + lane
  __device__ __forceinline__ KeyTiles(const Item& it) : cols(it.cols), count(it.count), m(it.m), len(it.len) {
    if (cols) ahead = fetch(0);
  }
  // Entry `first` + lane of the row, or -1 past its end (cols not null).
  __device__ __forceinline__ int fetch(int first) const {
    const int i = first + static_cast<int>(threadIdx.x & 31);
    return i < count ? __ldg(cols + i) : -1;
  }
  __device__ __forceinline__ int entry() {
    if (!cols) return e;
    if ((e & 31) == 0) {
      chunk = ahead;
      ahead = fetch(e + 32);
    }
    return __shfl_sync(0xffffffffu, chunk, e & 31);
  }
  __device__ __forceinline__ int next() {
    for (;;) {
      if (sub == kSub) {
        n = -1;
        while (e < count && n < 0) {
          const int c = entry();
          ++e;
          if (c >= 0 && c <= m) n = c;
        }
        if (n < 0) return -1;
        sub = 0;
      }
      const int start = n * kTile + sub * (kTile / kSub);
      ++sub;
      if (sub == 1 || start < len) return start;  // a block's first tile always starts inside
    }
  }
  // Whether the tile just returned lies on the diagonal block (the one whose keys need the
  // causal mask).
  __device__ __forceinline__ bool diagonal() const { return n == m; }
};

// Work items of this CTA: round r takes item r * grid + (cta, or grid - 1 - cta in odd rounds).
// The schedule is sorted longest first, so the snake order evens out each CTA's total (with
// fewer items than CTAs, one item per CTA).
struct ItemOrder {
  int base, grid, cta, num;
  __device__ __forceinline__ explicit ItemOrder(int num_items)
      : base(0), grid(static_cast<int>(gridDim.x)), cta(static_cast<int>(blockIdx.x)), num(num_items) {}
  __device__ __forceinline__ int next() {  // -1 at the end
    while (base < num) {
      const int index = base + (((base / grid) & 1) ? grid - 1 - cta : cta);
      base += grid;
      if (index < num) return index;
    }
    return -1;
  }
};

}  // namespace proxyattn::detail::cuda::sm90
