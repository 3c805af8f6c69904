// Stage 1 + 3 of the estimator on sm90 (sm_90a): the proxy score products on wgmma, which runs
// the product of one key tile while the warps mask, exponentiate and reduce another. Semantics
// are those of the sm80 stage1_kernel (estimate.cu); docs/kernels.md ("Stage 1 + 3") has
// when each runs.
//
// The sm80 kernel (one query block of 32 strided rows per CTA, warps splitting the keys,
// mma.sync) is latency-bound: ncu at 128K shows its tensor pipe 18% busy and a quarter of the
// warp slots used. Here a CTA of two warpgroups takes up to 128 strided query rows (the rows of
// `blocks` consecutive query blocks of one sequence, for one group), 64 per warpgroup, so that
// each key tile read from L2 serves four times the rows. Keys come in tiles of 64 strided tokens,
// loaded with cp.async into 128-byte-swizzled panels (the layout wgmma reads), kStage1Stages
// buffers deep; tiles go in pairs, the second one's product running while the first is
// processed. Pass 1 gives every row's log-sum-exp (each warp sees all keys of its rows: the
// statistics stay in registers), pass 2 the maximum of (score - lse) per (query block, key
// block), in shared memory. Then each query block is ranked and written (est::rank_and_write).
// One proxy head has few such row tiles (256 at 128K, 64 at 32K), and the longest one, a whole
// row of keys, would set the kernel's time. So the launcher splits each row tile's keys over a
// cluster of `split` CTAs: CTA r of the cluster takes key tiles r, r + split, ... (both passes);
// after pass 1 the CTAs merge their rows' statistics through distributed shared memory, after
// pass 2 each CTA gathers the block maxima of the query blocks it ranks.
#pragma once

#include <cooperative_groups.h>

#include <algorithm>

#include "cuda/estimate_rank.cuh"
#include "cuda/sm90/binary.hpp"
#include "cuda/sm90/sync.cuh"
#include "cuda/sm90/wgmma.cuh"
#include "cuda/sm80/mma.cuh"

namespace proxyattn::detail::cuda::sm90 {

constexpr int kStage1Threads = 256;  // two warpgroups
constexpr int kStage1Rows = 128;     // strided query rows per CTA, at most
constexpr int kStage1Keys = 64;      // strided keys per tile
constexpr int kStage1Stages = 4;     // key-tile buffers: a pair in use, the next pair loading

template <int D>
struct Stage1Layout {
  static constexpr int kQPanel = kStage1Rows * 128;  // one 64-column panel of Q, bytes
  static constexpr int kKPanel = kStage1Keys * 128;  // one 64-column panel of a key tile
  static constexpr int kQBytes = D / 64 * kQPanel;
  static constexpr int kKBytes = D / 64 * kKPanel;
  static constexpr int kTileBytes = kQBytes + kStage1Stages * kKBytes;
  static constexpr int kPartBytes = kStage1Rows * 8;  // (max, sum) of each row's own keys
};

// Rows [0, kRows) of a tile into 128-byte-swizzled panels at dst (1024-byte aligned): row r of
// the source at src + r * row_stride (elements, a multiple of 8); rows >= valid are zero-filled.
// All threads of the CTA take part.
template <int D, int kRows>
__device__ __forceinline__ void load_panels(std::uint32_t dst, const std::uint16_t* src, int valid,
                                            std::int64_t row_stride = D) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row, 8 per panel
  constexpr int kSteps = kRows * kChunks / kStage1Threads;
  static_assert(kSteps * kStage1Threads == kRows * kChunks && kStage1Threads % kChunks == 0);
  // A fixed trip count, and a thread keeps its chunk column and its row modulo 8 on every step:
  // the swizzled offset is computed once and the steps only add rows.
  const int ch = static_cast<int>(threadIdx.x) % kChunks, r0 = static_cast<int>(threadIdx.x) / kChunks;
  const std::uint32_t a0 = dst + (ch / 8) * (kRows * 128) + r0 * 128 + (((ch % 8) ^ (r0 % 8)) << 4);
#pragma unroll
  for (int k = 0; k < kSteps; ++k) {
    constexpr int kRowStep = kStage1Threads / kChunks;  // a multiple of 8: same swizzle phase
    const int r = r0 + k * kRowStep;
    const bool ok = r < valid;
    mma::cp_async16(a0 + k * kRowStep * 128, ok ? src + r * row_stride + ch * 8 : src, ok);
  }
}

// The same with each row's address from row_ptr(r) (null: a row that reads as zeros; the copy is
// then given `any`, a readable address it does not read), for keys that are not evenly spaced
// (paged caches).
template <int D, int kRows, class RowPtr>
__device__ __forceinline__ void load_panels_rows(std::uint32_t dst, const std::uint16_t* any, RowPtr row_ptr) {
  constexpr int kChunks = D / 8;
  constexpr int kSteps = kRows * kChunks / kStage1Threads;
  constexpr int kRowStep = kStage1Threads / kChunks;
  const int ch = static_cast<int>(threadIdx.x) % kChunks, r0 = static_cast<int>(threadIdx.x) / kChunks;
  const std::uint32_t a0 = dst + (ch / 8) * (kRows * 128) + r0 * 128 + (((ch % 8) ^ (r0 % 8)) << 4);
#pragma unroll
  for (int k = 0; k < kSteps; ++k) {
    const std::uint16_t* src = row_ptr(r0 + k * kRowStep);
    mma::cp_async16(a0 + k * kRowStep * 128, src ? src + ch * 8 : any, src != nullptr);
  }
}

// acc = one warpgroup's 64 query rows (Q panels at q_desc, kStage1Rows rows each) times a tile of
// kStage1Keys keys (panels at k_desc): D / 16 k-steps, then one commit group.
template <int D, bool kBf16>
__device__ __forceinline__ void issue_tile_scores(float (&acc)[32], std::uint64_t q_desc, std::uint64_t k_desc) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    mma_ss<kBf16>(acc, desc_advance(q_desc, (kk / 4) * Stage1Layout<D>::kQPanel + (kk % 4) * 32),
                  desc_advance(k_desc, (kk / 4) * Stage1Layout<D>::kKPanel + (kk % 4) * 32), kk > 0 ? 1 : 0);
  wgmma_commit();
}

// The key-tile loop of both estimator kernels (stage 1 here, stage 2 in stage2_sm90.cuh), over
// `steps` tiles (even) whose keys load_keys(t) copies into buffer t % kStage1Stages (and the first
// two of which, with Q, are already in flight). Tiles go in pairs: both products are issued, the
// first tile is processed while the second one's product runs. (A product left in flight across
// the loop edge would make ptxas serialise the wgmma pipeline.) While a pair is in use, the next
// pair loads. process(acc, t) gets this warpgroup's 64 rows x tile t.
template <int D, bool kBf16, class Load, class Process>
__device__ __forceinline__ void tile_pairs(int steps, std::uint64_t q_desc, std::uint32_t sk, Load&& load_keys,
                                           Process&& process) {
  float acc0[32], acc1[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) acc0[i] = acc1[i] = 0.f;
  auto k_desc = [&](int t) { return desc_sw128(sk + (t % kStage1Stages) * Stage1Layout<D>::kKBytes, 16, 1024); };
  for (int t = 0; t < steps; t += 2) {
    mma::cp_async_wait<0>();  // tiles t and t + 1 (and Q)
    fence_proxy_async();      // cp.async wrote them through the generic proxy; wgmma reads async
    __syncthreads();          // ... for every thread; the pair before is consumed
    load_keys(t + 2);         // into the buffers of tiles t - 2 and t - 1
    load_keys(t + 3);
    mma::cp_async_commit();
    pin(acc0);
    pin(acc1);
    wgmma_fence();
    issue_tile_scores<D, kBf16>(acc0, q_desc, k_desc(t));
    issue_tile_scores<D, kBf16>(acc1, q_desc, k_desc(t + 1));
    wgmma_wait<1>();
    pin(acc0);
    process(acc0, t);
    wgmma_wait<0>();
    pin(acc1);
    process(acc1, t + 1);
  }
}

template <class T, int D>
__global__ void __launch_bounds__(kStage1Threads)
    stage1_sm90_kernel(EstimateParams p, int blocks, int tile_bytes, int split) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using L = Stage1Layout<D>;
  constexpr bool kBf16 = Elem<T>::is_bf16;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* base = smem_raw + ((1024 - smem_u32(smem_raw) % 1024) % 1024);
  const std::uint32_t sq = smem_u32(base), sk = sq + L::kQBytes;
  unsigned long long* keys = reinterpret_cast<unsigned long long*>(base);  // after the scores
  float2* part = reinterpret_cast<float2*>(base + tile_bytes);              // [kStage1Rows]
  float* amax = reinterpret_cast<float*>(base + tile_bytes + L::kPartBytes);  // [blocks][sort_size]
  namespace cg = cooperative_groups;
  const cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(blockIdx.x) % split;  // the cluster is `split` CTAs along x

  // The group of query blocks: the cluster of its last (longest) block does the work.
  // Groups are aligned in absolute blocks (the sequence's first mask row may start one late);
  // rows before the first query (a chunk that starts inside a block) are masked like padding.
  const int b_last = p.num_blocks - 1 - static_cast<int>(blockIdx.x) / split;  // long rows first
  const int j = blockIdx.y;
  const int s = p.r.block_seq[b_last];
  const int bo = p.r.block_offset[s], first = p.r.first_block[s];
  const int nb = p.r.kv_block_offset[s + 1] - p.r.kv_block_offset[s];
  const int m_last = b_last - bo + first;
  const int m_lo = max(first, m_last / blocks * blocks);
  if (m_last != min(nb - 1, m_last / blocks * blocks + blocks - 1)) return;
  const int nblk = m_last - m_lo + 1;
  const int kv_len = p.r.cu_seqlens_k[s + 1] - p.r.cu_seqlens_k[s];
  const int q_off = kv_len - (p.r.cu_seqlens[s + 1] - p.r.cu_seqlens[s]);
  const int na = (kv_len + p.stride - 1) / p.stride;
  const int a_first = (q_off + p.stride - 1) / p.stride;  // the first strided query
  const int R = kBlock / p.stride;  // strided rows (and keys) per block: 8 to 128
  const int a0 = m_lo * R, a1 = min(na, (m_last + 1) * R), rows = a1 - a0;
  const int last = a1 - 1;  // the last strided query; keys past it are never causal here
  const int tiles = last / kStage1Keys + 1;
  const int own = rank < tiles ? (tiles - 1 - rank) / split + 1 : 0;  // this CTA's tiles: rank + split i
  const T* qbar = static_cast<const T*>(p.r.qbar) + (j * p.total_strided + p.r.strided_offset[s]) * D;
  const T* kbar = static_cast<const T*>(p.r.kbar) + (j * p.total_strided + p.r.strided_offset[s]) * D;

  const int wg = static_cast<int>(threadIdx.x) / 128, warp = (static_cast<int>(threadIdx.x) / 32) % 4;
  const int lane = static_cast<int>(threadIdx.x) % 32, g = lane / 4, c = lane % 4;
  const int row_base = 64 * wg + 16 * warp;  // this warp's first row: rows row_base + g + 8h
  // This warp's last row (-1: none); it skips the work of tiles that start past it.
  const int warp_last = a0 + row_base > last ? -1 : min(last, a0 + row_base + 15);

  for (int i = 0; i < nblk; ++i)
    for (int n = static_cast<int>(threadIdx.x); n <= m_lo + i; n += kStage1Threads) amax[i * p.sort_size + n] = -INFINITY;

  // Step t of this CTA's 2 * own: its tile t % own, in pass t / own (t < 2 * own: no division,
  // which would cost some 25 instructions a tile).
  auto tile_start = [&](int t) { return (rank + (t < own ? t : t - own) * split) * kStage1Keys; };
  auto load_keys = [&](int t) {
    if (t >= 2 * own) return;
    const int key0 = tile_start(t);
    load_panels<D, kStage1Keys>(sk + (t % kStage1Stages) * L::kKBytes,
                                reinterpret_cast<const std::uint16_t*>(kbar + static_cast<std::int64_t>(key0) * D),
                                last + 1 - key0);
  };
  load_panels<D, kStage1Rows>(sq, reinterpret_cast<const std::uint16_t*>(qbar + static_cast<std::int64_t>(a0) * D), rows);
  load_keys(0);
  load_keys(1);
  mma::cp_async_commit();
  const std::uint64_t q_desc = desc_sw128(sq + wg * 64 * 128, 16, 1024);

  mma::RowStat stat[2];
  float lse2[2] = {0.f, 0.f};
  const int key_groups = min(8, R / 8);  // n8 column groups per key block
  // R is a power of two (the stride divides the block): blocks by shifts, not divisions.
  const int r_shift = __ffs(R) - 1;
  // One tile of this warp's rows: pass 0 adds to the rows' statistics, pass 1 to the block
  // maxima. kMask: the tile reaches past a row's own position (keys after the query) or the warp
  // has padding rows; the other tiles, most of them, skip the per-element tests.
  auto body = [&]<bool kMask>(float(&acc)[32], int start, int pass) {
    float u[2][8];  // pass 1: per row half and n8 group, the max over the thread's two keys
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = row_base + g + 8 * h;
      // The row's last causal key; -1 masks a padding row or one before the first query.
      const int a = r >= rows || a0 + r < a_first ? -1 : a0 + r;
      const float shift = pass == 1 ? -lse2[h] : 0.f;
      float mx = -INFINITY, xs[16];  // the row's scores in base 2 (acc stays as wgmma left it)
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float x = fmaf(acc[4 * jj + 2 * h + e], p.scale_log2, shift);
          if constexpr (kMask)
            if (start + jj * 8 + c * 2 + e > a) x = -INFINITY;
          xs[2 * jj + e] = x;
          mx = fmaxf(mx, x);
        }
        u[h][jj] = fmaxf(xs[2 * jj], xs[2 * jj + 1]);
      }
      if (pass == 0) {
        const float b = stat[h].raise(mma::quad_max(mx));
        float sum = 0.f;
#pragma unroll
        for (int i = 0; i < 16; ++i) sum += fast_exp2(xs[i] - b);
        stat[h].sum += sum;
      }
    }
    if (pass == 0) return;
    // Merge in the thread what shares a (query block, key block): the row halves when a block
    // has >= 16 rows, the n8 groups of one key block; then across the warp, and one atomic.
    if (R >= 16)
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) u[0][jj] = fmaxf(u[0][jj], u[1][jj]);
#pragma unroll
    for (int w = 1; w < 8; w <<= 1)
      if (w < key_groups)
#pragma unroll
        for (int jj = 0; jj < 8; ++jj)
          if ((jj & w) == 0)
#pragma unroll
            for (int h = 0; h < 2; ++h) u[h][jj] = fmaxf(u[h][jj], u[h][jj | w]);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (R >= 16 && h > 0) continue;
      const int qb = (row_base + 8 * h) >> r_shift;  // R >= 16: the warp's rows are in one block
      if (qb >= nblk) continue;
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) {
        if ((jj & (key_groups - 1)) != 0) continue;
        const float v = est::warp_max(u[h][jj]);
        if (lane == 0 && v > -INFINITY) est::atomic_max_float(&amax[qb * p.sort_size + ((start + jj * 8) >> r_shift)], v);
      }
    }
  };
  // Between the passes: each row's log-sum-exp over all its keys, merged over the cluster's CTAs
  // in rank order (every thread; after the wait, the other CTAs read only `part`).
  auto row_lse = [&] {
    float mx[2], sum[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) mx[h] = stat[h].max, sum[h] = mma::quad_sum(stat[h].sum);
    if (split > 1) {
      if (c == 0)
#pragma unroll
        for (int h = 0; h < 2; ++h) part[row_base + g + 8 * h] = make_float2(mx[h], sum[h]);
      cluster.sync();
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mma::RowStat row;
      if (split == 1) {
        row.merge(mx[h], sum[h]);
      } else {
        for (int q = 0; q < split; ++q) {
          const float2 v = *cluster.map_shared_rank(part + row_base + g + 8 * h, q);
          row.merge(v.x, v.y);
        }
      }
      lse2[h] = row.lse();
    }
  };
  auto process = [&](float(&acc)[32], int t) {  // step t of the 2 * own of both passes
    const int pass = t < own ? 0 : 1;
    if (t == own) row_lse();
    const int start = tile_start(t);
    if (start > warp_last) return;
    if (start + kStage1Keys - 1 > a0 + row_base || row_base + 15 >= rows || a0 + row_base < a_first)
      body.template operator()<true>(acc, start, pass);
    else
      body.template operator()<false>(acc, start, pass);
  };

  tile_pairs<D, kBf16>(2 * own, q_desc, sk, load_keys, process);
  if (own == 0) row_lse();  // more CTAs than tiles: this one still takes part in the merges
  wgmma_wait<0>();
  mma::cp_async_wait<0>();
  __syncthreads();
  if (split > 1) {
    // CTA r ranks query blocks r, r + split, ...: first their maxima, the max over the cluster.
    cluster.sync();  // every CTA's maxima are final
    for (int i = rank; i < nblk; i += split)
      for (int n = static_cast<int>(threadIdx.x); n <= m_lo + i; n += kStage1Threads) {
        float v = amax[i * p.sort_size + n];
        for (int q = 0; q < split; ++q)
          if (q != rank) v = fmaxf(v, *cluster.map_shared_rank(amax + i * p.sort_size + n, q));
        amax[i * p.sort_size + n] = v;
      }
    cluster.sync();  // no CTA leaves, or reuses its maxima, while another reads them
  }
  for (int i = rank; i < nblk; i += split)
    est::rank_and_write<kStage1Threads>(p, amax + i * p.sort_size, keys, bo + m_lo + i - first, m_lo + i, j);
#else
  __trap();  // built for another target: the launcher checks the binary version first
#endif
}

// Whether the sm_90a build of this kernel is what runs on `device`; asked once per device.
template <class T, int D>
bool stage1_sm90_available(int device) {
  return sm90_code_runs<stage1_sm90_kernel<T, D>>(device);
}

// The key tiles' bytes of a CTA (or the ranking's keys, where those are more).
template <int D>
std::size_t stage1_sm90_tile_bytes(int sort_size) {
  return std::max<std::size_t>(Stage1Layout<D>::kTileBytes, static_cast<std::size_t>(sort_size) * sizeof(unsigned long long));
}

// The shape of the sm90 stage 1 for a problem, chosen with the plan (cuda/kernels.cpp): one
// cluster of `split` CTAs per query block of the batch (those that do not end a group exit at
// once); groups of up to `stride` blocks (128 rows), fewer where their maxima would not fit in
// shared memory. split (1 to 8; 0: chosen here) is the largest power of two that gives at most
// two CTAs per multiprocessor (1 where the row tiles alone are more), so that the longest row's
// keys are spread over several SMs (on 132 SMs: 8 up to 33 row tiles, 4 up to 66, 2 up to 132,
// 1 above; in a sweep of 8K-128K tokens on the H200 this rule picked the fastest split).
// rows = 0 where the sm80 kernel is the better choice: fewer working CTAs than half the
// multiprocessors unless `always`, or even one block does not fit (D = 256 beyond about 512K
// tokens).
struct Stage1Shape {
  int rows = 0;
  int split = 0;
  std::size_t smem = 0;
};

template <int D>
Stage1Shape stage1_sm90_shape(int sort_size, int stride, std::int64_t num_blocks, int groups, int sms, int split,
                              bool always) {
  constexpr std::size_t kMaxSmem = 223 * 1024;  // 227 KB per CTA less the kernel's static 2 KB
  const std::size_t tile_bytes = stage1_sm90_tile_bytes<D>(sort_size);
  auto smem = [&](int g) {
    return tile_bytes + Stage1Layout<D>::kPartBytes + static_cast<std::size_t>(g) * sort_size * sizeof(float) + 1024;
  };
  int rows = std::min(8, stride);
  while (rows > 1 && smem(rows) > kMaxSmem) rows /= 2;
  if (smem(rows) > kMaxSmem) return {};
  const std::int64_t row_tiles = num_blocks / rows * groups;
  if (split <= 0) {
    split = 1;
    while (split < 8 && row_tiles * split <= sms) split *= 2;
  }
  if (!always && 2 * row_tiles * split < sms) return {};
  return {rows, split, smem(rows)};
}

template <class T, int D>
void launch_stage1_sm90(const EstimateParams& p, const Stage1Shape& shape, cudaStream_t stream) {
  auto kernel = stage1_sm90_kernel<T, D>;
  PROXYATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shape.smem)));
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(p.num_blocks) * shape.split, p.groups);
  cfg.blockDim = dim3(kStage1Threads);
  cfg.dynamicSmemBytes = shape.smem;
  cfg.stream = stream;
  cudaLaunchAttribute cluster{};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = static_cast<unsigned>(shape.split);
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  cfg.attrs = &cluster;
  cfg.numAttrs = shape.split > 1 ? 1 : 0;
  PROXYATTN_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, p, shape.rows,
                                          static_cast<int>(stage1_sm90_tile_bytes<D>(p.sort_size)), shape.split));
  PROXYATTN_LAUNCH_CHECK("stage1_sm90_kernel");
}

}  // namespace proxyattn::detail::cuda::sm90
