// Device helpers of the estimator's kernels, shared by the sm80 ones (estimate.cu) and the
// sm90 stage 1 (sm90/stage1.cuh): float atomics and warp reductions, a shared-memory
// bitonic sort, and the ranking and CSR writing that ends stage 1 + 3 for one query block.
#pragma once

#include <cub/block/block_scan.cuh>

#include "core/rules.hpp"
#include "cuda/estimate.cuh"

namespace proxyattn::detail::cuda::est {

// Float max through integer atomics: non-negative floats order as ints, negative ones in
// reverse as unsigned ints. The cell starts at -inf.
__device__ __forceinline__ void atomic_max_float(float* cell, float v) {
  if (v >= 0.f)
    atomicMax(reinterpret_cast<int*>(cell), __float_as_int(v));
  else
    atomicMin(reinterpret_cast<unsigned*>(cell), __float_as_uint(v));
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// In-place bitonic sort of n (a power of two) keys in shared memory, descending.
template <class K>
__device__ void bitonic_sort_desc(K* keys, int n) {
  for (int k = 2; k <= n; k <<= 1)
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const int ixj = i ^ j;
        if (ixj > i) {
          const K a = keys[i], b = keys[ixj];
          const bool swap = (i & k) == 0 ? a < b : a > b;
          if (swap) keys[i] = b, keys[ixj] = a;
        }
      }
      __syncthreads();
    }
}

// Sort key of block n's stage-2 mass x for a descending sort: the mass's bits + 1 (masses are
// >= 0; NaN gets 0 and ranks last, below a zero mass, as rules::rank_key) above the complement
// of the index, so that ties go to the lower index. Never 0, which marks padding.
__device__ __forceinline__ unsigned long long mass_key(float x, int n) {
  const unsigned hi = x != x ? 0u : x > 0.f ? __float_as_uint(x) + 1u : 1u;
  return (static_cast<unsigned long long>(hi) << 32) | (0xFFFFFFFFu - static_cast<unsigned>(n));
}
__device__ __forceinline__ int key_block(unsigned long long key) {
  return static_cast<int>(0xFFFFFFFFu - static_cast<unsigned>(key & 0xFFFFFFFFu));
}

__device__ __forceinline__ int next_pow2(int x) {
  int p = 1;
  while (p < x) p <<= 1;
  return p;
}

// Writes every head's row of query block m (absolute, in the sequence; row b of the mask) for
// group j. Each head keeps the
// forced blocks, then what it prefers itself, then the group's proxy ranking: in the last block
// of a sequence with exact_last_block, its whole stage-2 order (p.r.head_order) instead of the
// ranking; elsewhere, its first min(head_columns, k_h) blocks where they are causal, then the
// ranking of amax, the query block's proxy block maxima (base-2 log probabilities), over the
// blocks not taken yet. kThreadsT threads (the CTA); keys holds next_pow2(m + 1) entries; pos
// aliases amax (the maxima are read first).
template <int kThreadsT>
__device__ void rank_and_write(const EstimateParams& p, float* amax, unsigned long long* keys, int b, int m, int j) {
  int* pos = reinterpret_cast<int*>(amax);
  const int s = p.r.block_seq[b];
  const int bo = p.r.kv_block_offset[s], nb = p.r.kv_block_offset[s + 1] - bo;
  const bool exact = p.exact_last_block && m == nb - 1;
  auto forced_block = [&](int n) { return n == m || (p.keep_sink && n == 0); };
  if (!exact) {
    // Rank the unforced blocks of the row: key = score bits (non-negative floats order as
    // integers) above the complement of the index, so that ties go to the lower index. Forced
    // blocks and padding get key 0 and sort last.
    const int n2 = next_pow2(m + 1);
    for (int n = threadIdx.x; n < n2; n += kThreadsT) {
      unsigned long long key = 0;
      if (n <= m && !forced_block(n)) {
        const float a = amax[n] == -INFINITY ? 0.f : exp2f(amax[n]);
        key = (static_cast<unsigned long long>(__float_as_uint(a)) << 32) | (0xFFFFFFFFu - static_cast<unsigned>(n));
      }
      keys[n] = key;
    }
    __syncthreads();
    bitonic_sort_desc(keys, n2);
    for (int i = threadIdx.x; i < n2; i += kThreadsT)
      if (keys[i] != 0) pos[key_block(keys[i])] = i;
    __syncthreads();
  }

  // Each head keeps the forced blocks and the blocks ranked before `threshold` (positions in the
  // head's own order if exact, in the group's ranking if not), written in ascending order through
  // a block-wide scan of the keep flags. A head's columns are kept by giving them position -1 for
  // the head's turn (their ranking positions are put back after it).
  using Scan = cub::BlockScan<int, kThreadsT>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int cols[kMaxHeadColumns], col_pos[kMaxHeadColumns];
  __shared__ int n_cols, threshold;
  const int forced = rules::forced_blocks(m, p.keep_sink);
  const int gq = p.q_heads / p.groups;
  const int per = (m + 1 + kThreadsT - 1) / kThreadsT, lo = min(m + 1, static_cast<int>(threadIdx.x) * per),
            hi = min(m + 1, lo + per);
  const int lane = static_cast<int>(threadIdx.x) % 32;
  for (int h = j * gq; h < (j + 1) * gq; ++h) {
    const std::int64_t row = static_cast<std::int64_t>(b) * p.q_heads + h;
    const std::int64_t out0 = p.r.row_offsets[row];
    const int take = static_cast<int>(p.r.row_offsets[row + 1] - out0) - forced;
    const std::int32_t* order = p.r.head_order + static_cast<std::int64_t>(h) * p.num_kv_blocks + bo;
    if (exact) {  // pos = the head's own ranks; the first `take` unforced ones
      for (int i = threadIdx.x; i <= m; i += kThreadsT) pos[order[i]] = i;
      __syncthreads();
      if (threadIdx.x == 0) {
        int f0 = pos[m], f1 = forced == 2 ? pos[0] : 0x7FFFFFFF, t = take;
        if (f1 < f0) f0 ^= f1, f1 ^= f0, f0 ^= f1;
        t += f0 < t;  // a forced block ranked inside the prefix pushes it one further
        t += f1 < t;
        n_cols = 0, threshold = t;
      }
    } else if (threadIdx.x < 32) {
      // Warp 0: the head's columns, heaviest first, as far as the row's budget goes (a lane per
      // entry of its order; a ballot keeps them in order).
      const int r = min(p.head_columns, p.r.budget[s * p.q_heads + h]);
      int nc = 0;
      for (int base = 0; base < r && nc < take; base += 32) {
        const int i = base + lane, n = i < r ? order[i] : -1;
        const bool ok = n >= 0 && n < m && !forced_block(n);
        const unsigned ballot = __ballot_sync(0xFFFFFFFFu, ok);
        const int at = nc + __popc(ballot & ((1u << lane) - 1u));
        if (ok && at < take) cols[at] = n;
        nc = min(take, nc + __popc(ballot));
      }
      __syncwarp();
      // The ranking positions [0, threshold) must hold take - nc blocks that are not columns. With
      // the columns' positions q sorted ascending, column k (0-based) lies inside the prefix
      // exactly when q - k < take - nc, and those are the first ones: count them.
      int inside = 0;
      for (int c = lane; c < nc; c += 32) {
        const int q = pos[cols[c]];
        int k = 0;
        for (int d = 0; d < nc; ++d) k += pos[cols[d]] < q;
        inside += q - k < take - nc;
        col_pos[c] = q;
      }
      inside = __reduce_add_sync(0xFFFFFFFFu, inside);
      __syncwarp();
      for (int c = lane; c < nc; c += 32) pos[cols[c]] = -1;
      if (lane == 0) n_cols = nc, threshold = take - nc + inside;
    }
    __syncthreads();
    const int t = threshold;
    auto keep = [&](int n) { return forced_block(n) || pos[n] < t; };
    int count = 0;
    for (int n = lo; n < hi; ++n) count += keep(n);
    int offset;
    Scan(scan_tmp).ExclusiveSum(count, offset);
    for (int n = lo; n < hi; ++n)
      if (keep(n)) p.r.col_indices[out0 + offset++] = n;
    __syncthreads();
    if (!exact && static_cast<int>(threadIdx.x) < n_cols) pos[cols[threadIdx.x]] = col_pos[threadIdx.x];
    __syncthreads();
  }
}

}  // namespace proxyattn::detail::cuda::est
