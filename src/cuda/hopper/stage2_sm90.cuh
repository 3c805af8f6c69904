// Stage 2 of the estimator on Hopper (sm_90a): the last queries of each head against one chunk of
// its keys, the products on wgmma. Semantics are those of the portable stage2_kernel
// (estimate.cu): pass 1 leaves each row's (max, sum) over the chunk, row_lse_kernel merges the
// chunks' pairs into the row's log-sum-exp, pass 2 sums the probabilities per key block.
//
// The portable kernel (mma.sync, one 64-key tile loaded at a time, the loads waited for before
// the math) took a third of the estimate at 128K (NOTES.md). Here a CTA is stage 1's two
// warpgroups with stage 1's tiles (hopper/stage1_sm90.cuh): the 128 query rows, 64 per
// warpgroup, and 64-key tiles in 128-byte-swizzled panels loaded with cp.async four buffers
// deep; products go in pairs, the first tile reduced while the second one's product runs. At
// D <= 128 two CTAs fit on an SM (96 KB of tiles, at most 128 registers), so that one CTA's
// loads and reductions hide behind the other's products.
#pragma once

#include "cuda/hopper/stage1_sm90.cuh"

namespace proxyattn::detail::cuda::sm90 {

template <class T, int D, bool kMass>
__global__ void __launch_bounds__(kStage1Threads, D <= 128 ? 2 : 1) stage2_sm90_kernel(EstimateParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using L = Stage1Layout<D>;
  constexpr bool kBf16 = Elem<T>::is_bf16;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const std::uint32_t sq = (smem_u32(smem_raw) + 1023u) & ~1023u, sk = sq + L::kQBytes;
  __shared__ float block_sum[kStage2Chunk];

  const int chunk = static_cast<int>(blockIdx.x), head = static_cast<int>(blockIdx.y);
  const int s = p.r.chunk_seq[chunk];
  const int c_local = chunk - p.r.chunk_offset[s];
  const std::int64_t begin = p.r.cu_seqlens[s];
  const int len = p.r.cu_seqlens[s + 1] - p.r.cu_seqlens[s];
  const int rows = min(kBlock, len), first = len - rows;  // the last `rows` queries
  const int kvh = head / (p.q_heads / p.kv_heads);
  const int key_begin = c_local * kStage2Chunk * kBlock;
  const int keys = min(len, key_begin + kStage2Chunk * kBlock) - key_begin;
  const int tiles = (keys + 2 * kStage1Keys - 1) / (2 * kStage1Keys) * 2;  // even: they go in pairs
  const T* qg = static_cast<const T*>(p.q) + (begin + first) * p.q_tok + head * p.q_head;
  const T* kg = static_cast<const T*>(p.k) + (begin + key_begin) * p.k_tok + kvh * p.k_head;

  const int wg = static_cast<int>(threadIdx.x) / 128, warp = (static_cast<int>(threadIdx.x) / 32) % 4;
  const int lane = static_cast<int>(threadIdx.x) % 32, g = lane / 4, c = lane % 4;
  const int row_base = 64 * wg + 16 * warp;  // this warp's first row: rows row_base + g + 8h
  // This warp's last query in the sequence (-1: its rows are all padding); every key after it
  // is masked for all its rows, so it skips such tiles.
  const int warp_last = row_base >= rows ? -1 : first + min(rows - 1, row_base + 15);

  auto load_keys = [&](int t) {  // tile t: keys key_begin + 64 t ...; past the chunk: zeros
    if (t >= tiles) return;
    const int key0 = t * kStage1Keys;
    load_panels<D, kStage1Keys>(sk + (t % kStage1Stages) * L::kKBytes,
                                reinterpret_cast<const std::uint16_t*>(kg + key0 * p.k_tok), keys - key0, p.k_tok);
  };
  load_panels<D, kStage1Rows>(sq, reinterpret_cast<const std::uint16_t*>(qg), rows, p.q_tok);
  load_keys(0);
  load_keys(1);
  mma::cp_async_commit();

  float lse2[2] = {0.f, 0.f};  // pass 2: the log-sum-exp (base 2) of this thread's two rows
  if constexpr (kMass) {
    // The rows' log-sum-exp, merged from pass 1's chunks by row_lse_kernel (+inf: a padding row).
    const float* rows_lse = p.r.row_lse + (static_cast<std::int64_t>(s) * p.q_heads + head) * kBlock;
#pragma unroll
    for (int h = 0; h < 2; ++h) lse2[h] = rows_lse[row_base + g + 8 * h];
    if (threadIdx.x < kStage2Chunk) block_sum[threadIdx.x] = 0.f;
    __syncthreads();
  }

  mma::RowStat stat[2];  // pass 1
  // One tile of this warp's rows. kMask: the tile reaches past the warp's first query or the warp
  // has padding rows; the other tiles skip the per-element tests.
  // The scores (base 2, less the row's log-sum-exp in pass 2) are written over acc, which the
  // next product of this buffer overwrites anyway.
  auto body = [&]<bool kMask>(float(&acc)[32], int start) {
    [[maybe_unused]] float part = 0.f;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = row_base + g + 8 * h;
      const int qi = first + r;
      [[maybe_unused]] float mx = -INFINITY;
#pragma unroll
      for (int jj = 0; jj < 8; ++jj)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = acc[4 * jj + 2 * h + e];
          x = fmaf(x, p.scale_log2, -lse2[h]);
          if constexpr (kMask)
            if (start + jj * 8 + c * 2 + e > qi || r >= rows) x = -INFINITY;
          if constexpr (kMass)
            part += fast_exp2(x);
          else
            mx = fmaxf(mx, x);
        }
      if constexpr (!kMass) {
        const float b = stat[h].raise(mma::quad_max(mx));
        float sum = 0.f;
#pragma unroll
        for (int jj = 0; jj < 8; ++jj) sum += fast_exp2(acc[4 * jj + 2 * h] - b) + fast_exp2(acc[4 * jj + 2 * h + 1] - b);
        stat[h].sum += sum;
      }
    }
    if constexpr (kMass) {
      part = est::warp_sum(part);
      if (lane == 0) atomicAdd(&block_sum[(start - key_begin) / kBlock], part);
    }
  };
  auto process = [&](float(&acc)[32], int t) {
    const int start = key_begin + t * kStage1Keys;
    if (start >= key_begin + keys || start > warp_last) return;
    if (start + kStage1Keys - 1 > first + row_base || row_base + 15 >= rows)
      body.template operator()<true>(acc, start);
    else
      body.template operator()<false>(acc, start);
  };

  const std::uint64_t q_desc = desc_sw128(sq + wg * 64 * 128, 16, 1024);
  tile_pairs<D, kBf16>(tiles, q_desc, sk, load_keys, process);
  mma::cp_async_wait<0>();

  if constexpr (kMass) {
    __syncthreads();
    const int nb = p.r.block_offset[s + 1] - p.r.block_offset[s];
    const int blocks_here = min(kStage2Chunk, nb - c_local * kStage2Chunk);
    if (static_cast<int>(threadIdx.x) < blocks_here)
      p.r.mass[static_cast<std::int64_t>(head) * p.num_blocks + p.r.block_offset[s] + c_local * kStage2Chunk +
               threadIdx.x] = block_sum[threadIdx.x] / rows;
  } else {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float l = mma::quad_sum(stat[h].sum);
      const int r = row_base + g + 8 * h;
      if (c == 0) {
        float* e = p.r.partial + ((static_cast<std::int64_t>(chunk) * p.q_heads + head) * kBlock + r) * 2;
        e[0] = stat[h].max;
        e[1] = l;
      }
    }
  }
#else
  __trap();  // built for another target: the launcher checks the binary version first
#endif
}

// Whether the sm_90a build of this kernel is what runs on `device`; asked once per device.
template <class T, int D>
bool stage2_sm90_available(int device) {
  return sm90_code_runs<stage2_sm90_kernel<T, D, false>>(device);
}

// One pass (kMass: the second), one CTA per (chunk, head), as the portable kernel.
template <class T, int D, bool kMass>
void launch_stage2_sm90(const EstimateParams& p, cudaStream_t stream) {
  constexpr int smem = Stage1Layout<D>::kTileBytes + 1024;  // + the 1024-byte alignment
  auto kernel = stage2_sm90_kernel<T, D, kMass>;
  PROXYATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  kernel<<<dim3(p.total_chunks, p.q_heads), kStage1Threads, smem, stream>>>(p);
  PROXYATTN_LAUNCH_CHECK(kMass ? "stage2_sm90_kernel (block masses)" : "stage2_sm90_kernel (row statistics)");
}

}  // namespace proxyattn::detail::cuda::sm90
