// Device helpers of the estimator's kernels, shared by the portable ones (estimate.cu) and the
// Hopper stage 1 (hopper/stage1_sm90.cuh): float atomics and warp reductions, a shared-memory
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

__device__ __forceinline__ int next_pow2(int x) {
  int p = 1;
  while (p < x) p <<= 1;
  return p;
}

// Ranks the unforced blocks of query block m (row b of the mask) by amax, its proxy block maxima
// (base-2 log probabilities), and writes every head's prefix of group j: kThreadsT threads (the
// CTA), keys holds next_pow2(m + 1) entries; pos aliases amax (the maxima are read first).
template <int kThreadsT>
__device__ void rank_and_write(const EstimateParams& p, float* amax, unsigned long long* keys, int b, int m, int j) {
  int* pos = reinterpret_cast<int*>(amax);
  // Rank the unforced blocks of the row: key = score bits (non-negative floats order as
  // integers) above the complement of the index, so that ties go to the lower index. Forced
  // blocks and padding get key 0 and sort last.
  const int n2 = next_pow2(m + 1);
  for (int n = threadIdx.x; n < n2; n += kThreadsT) {
    const bool forced = n == m || (p.keep_sink && n == 0);
    unsigned long long key = 0;
    if (n <= m && !forced) {
      const float a = amax[n] == -INFINITY ? 0.f : exp2f(amax[n]);
      key = (static_cast<unsigned long long>(__float_as_uint(a)) << 32) | (0xFFFFFFFFu - static_cast<unsigned>(n));
    }
    keys[n] = key;
  }
  __syncthreads();
  bitonic_sort_desc(keys, n2);
  for (int i = threadIdx.x; i < n2; i += kThreadsT)
    if (keys[i] != 0) pos[0xFFFFFFFFu - static_cast<unsigned>(keys[i] & 0xFFFFFFFFu)] = i;
  __syncthreads();

  // Each head keeps the forced blocks and the first (count - forced) ranked ones, written in
  // ascending order through a block-wide scan of the keep flags.
  using Scan = cub::BlockScan<int, kThreadsT>;
  __shared__ typename Scan::TempStorage scan_tmp;
  const int forced = rules::forced_blocks(m, p.keep_sink);
  const int gq = p.q_heads / p.groups;
  const int per = (m + 1 + kThreadsT - 1) / kThreadsT, lo = min(m + 1, static_cast<int>(threadIdx.x) * per),
            hi = min(m + 1, lo + per);
  for (int h = j * gq; h < (j + 1) * gq; ++h) {
    const std::int64_t row = static_cast<std::int64_t>(b) * p.q_heads + h;
    const std::int64_t out0 = p.r.row_offsets[row];
    const int take = static_cast<int>(p.r.row_offsets[row + 1] - out0) - forced;
    auto keep = [&](int n) { return n == m || (p.keep_sink && n == 0) || pos[n] < take; };
    int count = 0;
    for (int n = lo; n < hi; ++n) count += keep(n);
    int offset;
    Scan(scan_tmp).ExclusiveSum(count, offset);
    for (int n = lo; n < hi; ++n)
      if (keep(n)) p.r.col_indices[out0 + offset++] = n;
    __syncthreads();
  }
}

}  // namespace proxyattn::detail::cuda::est
