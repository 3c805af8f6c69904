// Block-sparse flash-attention forward for sm_80+ (mma.sync, cp.async), one CTA of 4 warps per
// (query tile, head) work item (parameters and launcher declared in cuda/attention.hpp). The kept
// key blocks come from the CSR mask (or every causal block for dense attention) through one
// iterator; keys are processed in tiles of 64 with K and V double-buffered so that the copy of
// the next tile overlaps the math of this one.
#pragma once

#include <cstdint>

#include "cuda/attention.hpp"
#include "cuda/common.cuh"
#include "cuda/sm80/mma.cuh"

namespace proxyattn::detail::cuda {

// Walks the 64-key tiles of the kept blocks of one row, skipping tiles past the sequence end,
// tiles wholly after the last query of the CTA, and indices outside [0, m] (a bad raw mask).
struct KeyTiles {
  const std::int32_t* cols;  // null: dense, blocks lo..hi-1 themselves
  std::int64_t e, hi;
  int sub, m, len, last_query;

  __device__ __forceinline__ int next() {
    while (e < hi) {
      const int n = cols ? cols[e] : static_cast<int>(e);
      const int start = n * 128 + sub * kKeyTile;
      if (++sub == 128 / kKeyTile) {
        sub = 0;
        ++e;
      }
      if (n >= 0 && n <= m && start < len && start <= last_query) return start;
    }
    return -1;
  }
};

template <class T, int D, int BR>
__global__ void __launch_bounds__(128) sparse_attention_kernel(AttentionParams p) {
  constexpr int MT = BR / 64;  // m16 tiles per warp: 4 warps x 16 x MT rows = BR
  constexpr bool kBf16 = Elem<T>::is_bf16;
  extern __shared__ __align__(128) std::uint16_t smem_raw[];
  std::uint16_t* sQ = mma::align_tiles<D>(smem_raw);  // the launcher adds the slack
  std::uint16_t* sK = sQ + BR * D;           // two buffers of kKeyTile x D
  std::uint16_t* sV = sK + 2 * kKeyTile * D;  // two buffers

  if (static_cast<int>(blockIdx.x) >= p.num_items) return;
  const int row = p.schedule[blockIdx.x / p.tiles_per_block];
  const int tile = blockIdx.x % p.tiles_per_block;
  const int b = row / p.q_heads, h = row % p.q_heads;
  const int s = p.block_seq[b];
  const int m = b - p.block_offset[s] + p.first_block[s];  // absolute query block
  const std::int64_t q_begin = p.cu_seqlens[s];
  const int len = p.kv.cu_seqlens_k[s + 1] - p.kv.cu_seqlens_k[s];  // key positions
  const int q_off = len - (p.cu_seqlens[s + 1] - p.cu_seqlens[s]);   // the first query's position
  const int q0 = m * 128 + tile * BR;                                 // the tile's first position
  if (q0 >= len || q0 + BR <= q_off) return;
  const int q_rows = min(BR, len - q0);
  const int q_skip = max(0, q_off - q0);  // rows before the first query: not loaded, not written
  const int kvh = h / p.gqa_ratio;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;

  // Row r of the tile is query token q_begin + q0 + r - q_off.
  const std::int64_t q_tok0 = q_begin + q0 - q_off;
  const T* qg = static_cast<const T*>(p.q) + h * p.q_head;
  const T* kg = static_cast<const T*>(p.k) + kvh * p.k_head;
  const T* vg = static_cast<const T*>(p.v) + kvh * p.v_head;
  const std::int64_t kv_begin = p.kv.table ? 0 : p.kv.cu_seqlens_k[s];

  KeyTiles tiles{p.col_indices, p.row_offsets ? p.row_offsets[row] : 0, p.row_offsets ? p.row_offsets[row + 1] : m + 1,
                 0, m, len, q0 + q_rows - 1};
  if (!p.row_offsets) tiles.cols = nullptr;

  const std::uint32_t k_smem = mma::smem_addr(sK), v_smem = mma::smem_addr(sV);
  constexpr std::uint32_t kTileBytes = kKeyTile * D * 2;
  auto load_kv = [&](const T* base, std::int64_t tok_stride, std::uint32_t dst, int start) {
    if (!p.kv.table) {
      mma::load_rows_async<D, kKeyTile>(dst, reinterpret_cast<const std::uint16_t*>(base + (kv_begin + start) * tok_stride),
                                        static_cast<int>(tok_stride), len - start);
    } else {
      mma::load_rows_async_each<D, kKeyTile>(dst, reinterpret_cast<const std::uint16_t*>(base), [&](int r) {
        const std::int64_t at = start + r < len ? p.kv.row(s, start + r) : -1;
        return at < 0 ? nullptr : reinterpret_cast<const std::uint16_t*>(base + at * tok_stride);
      });
    }
  };

  mma::load_tile_async<D, 128>(
      sQ, BR,
      [&](int r) {  // rows outside the queries read nothing; their address is any readable one
        return reinterpret_cast<const std::uint16_t*>(r >= q_skip && r < q_rows ? qg + (q_tok0 + r) * p.q_tok : qg);
      },
      [&](int r) { return r >= q_skip && r < q_rows; });
  mma::cp_async_commit();
  int cur = tiles.next();
  if (cur >= 0) load_kv(kg, p.k_tok, k_smem, cur);
  mma::cp_async_commit();

  float O[MT][D / 8][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < D / 8; ++j) O[mt][j][0] = O[mt][j][1] = O[mt][j][2] = O[mt][j][3] = 0.f;
  float row_max[MT][2], row_sum[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) row_max[mt][0] = row_max[mt][1] = -INFINITY, row_sum[mt][0] = row_sum[mt][1] = 0.f;

  const int warp_row0 = warp * 16 * MT;  // first row of this warp within the CTA tile
  const std::uint32_t q_lane0 = mma::lane_addr_a<D>(sQ, warp_row0);
  const std::uint32_t k_lane0 = mma::lane_addr_b<D>(sK, 0);
  const std::uint32_t v_lane0 = mma::lane_addr_a<D>(sV, 0);
  int buf = 0;
  while (cur >= 0) {
    load_kv(vg, p.v_tok, v_smem + buf * kTileBytes, cur);
    mma::cp_async_commit();
    mma::cp_async_wait<1>();  // Q and K(cur) have landed; V(cur) may still be in flight
    __syncthreads();

    const int nxt = tiles.next();
    const bool need_mask = cur + kKeyTile > q0 || cur + kKeyTile > len;
    const std::uint32_t k_lane = k_lane0 + buf * kTileBytes;
    const std::uint32_t v_lane = v_lane0 + buf * kTileBytes;
    float S[MT][kKeyTile / 8][4];
    mma::warp_scores<D, MT, kBf16>(q_lane0, k_lane, S);
    if (nxt >= 0) load_kv(kg, p.k_tok, k_smem + (buf ^ 1) * kTileBytes, nxt);
    mma::cp_async_commit();
    // Mask keys after the query (diagonal) or past the sequence end, then online softmax in
    // base 2: the row max is taken on raw scores (the scale is positive), and each probability
    // is one FFMA and one ex2.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const int qi = q0 + warp_row0 + mt * 16 + g + hr * 8;
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < kKeyTile / 8; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            if (need_mask) {
              const int key = cur + j * 8 + c * 2 + e;
              if (key > qi || key >= len) S[mt][j][hr * 2 + e] = -INFINITY;
            }
            mx = fmaxf(mx, S[mt][j][hr * 2 + e]);
          }
        mx = mma::quad_max(mx) * p.scale_log2;
        const float new_max = fmaxf(row_max[mt][hr], mx);
        // A row that has seen no key keeps max -inf: subtract 0 so that exp2 gives 0, not NaN.
        const float base = new_max == -INFINITY ? 0.f : new_max;
        const float rescale = fast_exp2(row_max[mt][hr] - base);
        row_max[mt][hr] = new_max;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < kKeyTile / 8; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float pe = fast_exp2(fmaf(S[mt][j][hr * 2 + e], p.scale_log2, -base));
            S[mt][j][hr * 2 + e] = pe;
            sum += pe;
          }
        row_sum[mt][hr] = row_sum[mt][hr] * rescale + sum;  // per-lane partial; the quad sums at the end
#pragma unroll
        for (int j = 0; j < D / 8; ++j) O[mt][j][hr * 2] *= rescale, O[mt][j][hr * 2 + 1] *= rescale;
      }

    mma::cp_async_wait<1>();  // V(cur) has landed; K(nxt) may still be in flight
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kKeyTile / 16; ++kk) {
      std::uint32_t a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {  // C fragments of two n8 tiles are the A fragment of a k16 step
        a[mt][0] = Elem<T>::pack(S[mt][2 * kk][0], S[mt][2 * kk][1]);
        a[mt][1] = Elem<T>::pack(S[mt][2 * kk][2], S[mt][2 * kk][3]);
        a[mt][2] = Elem<T>::pack(S[mt][2 * kk + 1][0], S[mt][2 * kk + 1][1]);
        a[mt][3] = Elem<T>::pack(S[mt][2 * kk + 1][2], S[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        std::uint32_t bv[4];
        mma::ldmatrix_x4_trans(bv, (v_lane ^ (32 * dp)) + kk * 16 * 2 * D);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma::mma16816<kBf16>(O[mt][2 * dp], a[mt], bv[0], bv[1]);
          mma::mma16816<kBf16>(O[mt][2 * dp + 1], a[mt], bv[2], bv[3]);
        }
      }
    }
    cur = nxt;
    buf ^= 1;
  }
  mma::cp_async_wait<0>();

  // Epilogue: normalise, write O in the input dtype and LSE in natural log.
  T* og = static_cast<T*>(p.o) + h * p.o_head;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int r = warp_row0 + mt * 16 + g + hr * 8;
      const float l = mma::quad_sum(row_sum[mt][hr]);
      if (r >= q_rows || r < q_skip) continue;
      const bool empty = row_max[mt][hr] == -INFINITY;
      const float inv = empty ? 0.f : 1.f / l;
      T* orow = og + (q_tok0 + r) * p.o_tok;
#pragma unroll
      for (int j = 0; j < D / 8; ++j)
        *reinterpret_cast<std::uint32_t*>(orow + j * 8 + c * 2) =
            Elem<T>::pack(O[mt][j][hr * 2] * inv, O[mt][j][hr * 2 + 1] * inv);
      if (p.lse && c == 0)
        p.lse[h * p.total_tokens + q_tok0 + r] = empty ? -INFINITY : (row_max[mt][hr] + log2f(l)) * kLn2;
    }
}

// Query rows per CTA: 128 (two m16 tiles per warp, FA2's shape) up to D = 128; 64 at D = 256,
// where two tiles' output accumulators would not fit in the registers.
template <int D>
constexpr int query_tile_rows() { return D == 256 ? 64 : 128; }

template <class T, int D>
void launch_sparse_attention(AttentionParams p, cudaStream_t stream) {
  constexpr int BR = query_tile_rows<D>();
  p.tiles_per_block = 128 / BR;
  p.num_items = p.num_rows * p.tiles_per_block;
  if (p.num_items == 0) return;
  const std::size_t smem = static_cast<std::size_t>(BR + 4 * kKeyTile) * D * 2 + 2 * D;  // + alignment slack
  auto kernel = sparse_attention_kernel<T, D, BR>;
  PROXYATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<p.num_items, 128, smem, stream>>>(p);
  PROXYATTN_LAUNCH_CHECK("sparse_attention_kernel");
}

}  // namespace proxyattn::detail::cuda
