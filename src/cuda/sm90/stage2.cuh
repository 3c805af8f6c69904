// Stage 2 of the estimator on sm90 (sm_90a): the last queries of each head against one chunk of
// its keys, the products on wgmma. Semantics are those of the sm80 stage2_kernel
// (estimate.cu), whose pass 1 leaves each row's (max, sum) over the chunk, row_lse_kernel merges
// the chunks' pairs into the row's log-sum-exp, and pass 2 computes the scores again to sum the
// probabilities per key block. Here one pass does both: with the (max, sum) of the chunk it
// leaves each row's (max, sum) over each key block, and block_mass_kernel (estimate.cu) scales
// those by the row's log-sum-exp, so the scores are computed once.
//
// The sm80 kernel (mma.sync, one 64-key tile loaded at a time, the loads waited for before
// the math) exposes the latency of every load. Here a CTA is stage 1's two
// warpgroups with stage 1's tiles (sm90/stage1.cuh): the 128 query rows, 64 per
// warpgroup, and 64-key tiles in 128-byte-swizzled panels loaded with cp.async four buffers
// deep; products go in pairs, the first tile reduced while the second one's product runs. At
// D <= 128 two CTAs fit on an SM (96 KB of tiles, at most 128 registers), so that one CTA's
// loads and reductions hide behind the other's products.
#pragma once

#include "cuda/sm90/stage1.cuh"

namespace proxyattn::detail::cuda::sm90 {

template <class T, int D>
__global__ void __launch_bounds__(kStage1Threads, D <= 128 ? 2 : 1) stage2_sm90_kernel(EstimateParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using L = Stage1Layout<D>;
  constexpr bool kBf16 = Elem<T>::is_bf16;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const std::uint32_t sq = (smem_u32(smem_raw) + 1023u) & ~1023u, sk = sq + L::kQBytes;

  const int chunk = static_cast<int>(blockIdx.x), head = static_cast<int>(blockIdx.y);
  const int s = p.r.chunk_seq[chunk];
  const int c_local = chunk - p.r.chunk_offset[s];
  const int q_len = p.r.cu_seqlens[s + 1] - p.r.cu_seqlens[s];
  const int len = p.r.cu_seqlens_k[s + 1] - p.r.cu_seqlens_k[s];  // key positions
  const int rows = min(kBlock, q_len), first = len - rows;      // the last `rows` queries
  const int kvh = head / (p.q_heads / p.kv_heads);
  const int key_begin = c_local * kStage2Chunk * kBlock;
  const int keys = min(len, key_begin + kStage2Chunk * kBlock) - key_begin;
  const int tiles = (keys + 2 * kStage1Keys - 1) / (2 * kStage1Keys) * 2;  // even: they go in pairs
  const T* qg = static_cast<const T*>(p.q) + (p.r.cu_seqlens[s] + q_len - rows) * p.q_tok + head * p.q_head;
  const T* kg = static_cast<const T*>(p.k) + kvh * p.k_head;

  const int wg = static_cast<int>(threadIdx.x) / 128, warp = (static_cast<int>(threadIdx.x) / 32) % 4;
  const int lane = static_cast<int>(threadIdx.x) % 32, g = lane / 4, c = lane % 4;
  const int row_base = 64 * wg + 16 * warp;  // this warp's first row: rows row_base + g + 8h
  // This warp's last query in the sequence (-1: its rows are all padding); every key after it
  // is masked for all its rows, so it skips such tiles.
  const int warp_last = row_base >= rows ? -1 : first + min(rows - 1, row_base + 15);

  auto load_keys = [&](int t) {  // tile t: keys key_begin + 64 t ...; past the chunk: zeros
    if (t >= tiles) return;
    const int key0 = t * kStage1Keys;
    const std::uint32_t dst = sk + (t % kStage1Stages) * L::kKBytes;
    if (!p.kv.table) {
      load_panels<D, kStage1Keys>(
          dst, reinterpret_cast<const std::uint16_t*>(kg + (p.kv.cu_seqlens_k[s] + key_begin + key0) * p.k_tok),
          keys - key0, p.k_tok);
    } else {
      load_panels_rows<D, kStage1Keys>(dst, reinterpret_cast<const std::uint16_t*>(kg), [&](int r) -> const std::uint16_t* {
        const std::int64_t row = key0 + r < keys ? p.kv.row(s, key_begin + key0 + r) : -1;
        return row < 0 ? nullptr : reinterpret_cast<const std::uint16_t*>(kg + row * p.k_tok);
      });
    }
  };
  load_panels<D, kStage1Rows>(sq, reinterpret_cast<const std::uint16_t*>(qg), rows, p.q_tok);
  load_keys(0);
  load_keys(1);
  mma::cp_async_commit();

  mma::RowStat stat[2];  // each of this thread's two rows over the chunk: its max, this lane's sum
  float in_block[2] = {0.f, 0.f};  // ... and this lane's sum over the current key block, same max
  // This CTA's (max, sum) of each key block and row: [kStage2Chunk][kBlock].
  float2* block_part = p.r.block_part + (static_cast<std::int64_t>(chunk) * p.q_heads + head) * kStage2Chunk * kBlock;
  // One tile of this warp's rows. kMask: the tile reaches past the warp's first query or the warp
  // has padding rows; the other tiles skip the per-element tests.
  // The scores (base 2) are written over acc, which the next product of this buffer overwrites
  // anyway.
  auto body = [&]<bool kMask>(float(&acc)[32], int start) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = row_base + g + 8 * h;
      const int qi = r >= rows ? -1 : first + r;  // the row's last causal key; -1: a padding row
      float mx = -INFINITY;
#pragma unroll
      for (int jj = 0; jj < 8; ++jj)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = acc[4 * jj + 2 * h + e];
          x *= p.scale_log2;
          if constexpr (kMask)
            if (start + jj * 8 + c * 2 + e > qi) x = -INFINITY;
          mx = fmaxf(mx, x);
        }
      const float before = stat[h].max;
      const float b = stat[h].raise(mma::quad_max(mx));
      float sum = 0.f;
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) sum += fast_exp2(acc[4 * jj + 2 * h] - b) + fast_exp2(acc[4 * jj + 2 * h + 1] - b);
      stat[h].sum += sum;
      // The block's sum so far moves to the new max (exp2(-inf) = 0 where it had none).
      in_block[h] = in_block[h] * fast_exp2(before - b) + sum;
    }
  };
  // Tile t; every key block has two (tiles is twice the blocks), and after the second one the
  // block's (max, sum) of each row is written, also where the warp had nothing to add.
  auto process = [&](float(&acc)[32], int t) {
    const int start = key_begin + t * kStage1Keys;
    if (start < key_begin + keys && start <= warp_last) {
      if (start + kStage1Keys - 1 > first + row_base || row_base + 15 >= rows)
        body.template operator()<true>(acc, start);
      else
        body.template operator()<false>(acc, start);
    }
    if (t & 1) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float sum = mma::quad_sum(in_block[h]);
        if (c == 0) block_part[(t / 2) * kBlock + row_base + g + 8 * h] = make_float2(stat[h].max, sum);
        in_block[h] = 0.f;
      }
    }
  };

  const std::uint64_t q_desc = desc_sw128(sq + wg * 64 * 128, 16, 1024);
  tile_pairs<D, kBf16>(tiles, q_desc, sk, load_keys, process);
  mma::cp_async_wait<0>();

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
#else
  __trap();  // built for another target: the launcher checks the binary version first
#endif
}

// Whether the sm_90a build of this kernel is what runs on `device`; asked once per device.
template <class T, int D>
bool stage2_sm90_available(int device) {
  return sm90_code_runs<stage2_sm90_kernel<T, D>>(device);
}

// One CTA per (chunk, head), as the sm80 kernel's passes.
template <class T, int D>
void launch_stage2_sm90(const EstimateParams& p, cudaStream_t stream) {
  constexpr int smem = Stage1Layout<D>::kTileBytes + 1024;  // + the 1024-byte alignment
  auto kernel = stage2_sm90_kernel<T, D>;
  PROXYATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  kernel<<<dim3(p.total_chunks, p.q_heads), kStage1Threads, smem, stream>>>(p);
  PROXYATTN_LAUNCH_CHECK("stage2_sm90_kernel");
}

}  // namespace proxyattn::detail::cuda::sm90
