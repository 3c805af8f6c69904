// Estimator kernels (see estimate.cuh for the sequence of launches).
#include <cub/block/block_scan.cuh>

#include "core/rules.hpp"
#include "cuda/estimate.cuh"
#include "cuda/estimate_rank.cuh"
#include "cuda/kernel_table.hpp"
#include "cuda/sm80/mma.cuh"
#include "cuda/sm90/stage1.cuh"
#include "cuda/sm90/stage2.cuh"

namespace proxyattn::detail::cuda {
namespace {

using est::atomic_max_float;
using est::bitonic_sort_desc;
using est::next_pow2;
using est::rank_and_write;
using est::warp_max;
using est::warp_sum;

constexpr int kThreads = 128;

// Index of the sequence holding entry `x` of a table of prefix offsets (num_seqs + 1 entries).
__device__ __forceinline__ int find_seq(const std::int32_t* offsets, int num_seqs, std::int64_t x) {
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (offsets[mid] <= x) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Sequence s's queries and keys: q_len queries from token q_begin of q, the last of kv_len key
// positions (q_off = kv_len - q_len is the first query's position).
struct SeqSpan {
  std::int64_t q_begin;
  int q_len, kv_len, q_off;
  __device__ __forceinline__ SeqSpan(const EstimateParams& p, int s) {
    q_begin = p.r.cu_seqlens[s];
    q_len = p.r.cu_seqlens[s + 1] - p.r.cu_seqlens[s];
    kv_len = p.r.cu_seqlens_k[s + 1] - p.r.cu_seqlens_k[s];
    q_off = kv_len - q_len;
  }
};

// ---- proxy heads ---------------------------------------------------------------------------
// One CTA per strided key position a * stride of a sequence and group: the mean key there, and
// the mean query where that position is a query (zeros before the first one, rows stage 1 masks).
template <class T, int D>
__global__ void __launch_bounds__(kThreads) proxy_kernel(EstimateParams p) {
  const std::int64_t a = blockIdx.x;
  const int j = blockIdx.y;
  const int s = find_seq(p.r.strided_offset, p.num_seqs, a);
  const SeqSpan seq(p, s);
  const int pos = static_cast<int>(a - p.r.strided_offset[s]) * p.stride;
  const std::int64_t key_row = p.kv.row(s, pos);
  const bool has_q = pos >= seq.q_off;
  const int gq = p.q_heads / p.groups, gk = p.kv_heads / p.groups;
  const T* q = static_cast<const T*>(p.q) + (has_q ? seq.q_begin + pos - seq.q_off : 0) * p.q_tok;
  const T* k = static_cast<const T*>(p.k) + (key_row >= 0 ? key_row : 0) * p.k_tok;
  T* qbar = static_cast<T*>(p.r.qbar) + (j * p.total_strided + a) * D;
  T* kbar = static_cast<T*>(p.r.kbar) + (j * p.total_strided + a) * D;
  for (int d = threadIdx.x; d < D; d += kThreads) {
    float sq = 0.f, sk = 0.f;
    if (has_q)
      for (int h = j * gq; h < (j + 1) * gq; ++h) sq += Elem<T>::to_float(q[h * p.q_head + d]);
    if (key_row >= 0)
      for (int h = j * gk; h < (j + 1) * gk; ++h) sk += Elem<T>::to_float(k[h * p.k_head + d]);
    qbar[d] = Elem<T>::from_float(sq / gq);
    kbar[d] = Elem<T>::from_float(sk / gk);
  }
}

// ---- stage 2 -------------------------------------------------------------------------------
// One CTA per (chunk of kStage2Chunk key blocks, head): the last min(128, q_len) queries of the
// head against the chunk's keys, in one pass that leaves each row's (max, sum) over the chunk
// (partial) and over each key block (block_part, against the chunk's running max at the block's
// end), as the sm90 kernel does (sm90/stage2.cuh); row_lse_kernel and block_mass_kernel
// then turn them into the block masses.
template <class T, int D>
__global__ void __launch_bounds__(kThreads) stage2_kernel(EstimateParams p) {
  constexpr bool kBf16 = Elem<T>::is_bf16;
  extern __shared__ __align__(128) std::uint16_t smem[];
  std::uint16_t* sQ = mma::align_tiles<D>(smem);  // 128 x D
  std::uint16_t* sK = sQ + kBlock * D;        // 64 x D

  const int chunk = blockIdx.x, h = blockIdx.y;
  const int s = p.r.chunk_seq[chunk];
  const int c_local = chunk - p.r.chunk_offset[s];
  const SeqSpan seq(p, s);
  const int len = seq.kv_len;
  const int L = min(kBlock, seq.q_len), first = len - L;  // rows: the last L positions
  const int kvh = h / (p.q_heads / p.kv_heads);
  const int key_begin = c_local * kStage2Chunk * kBlock;
  const int key_end = min(len, key_begin + kStage2Chunk * kBlock);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const T* qg = static_cast<const T*>(p.q) + (seq.q_begin + seq.q_len - L) * p.q_tok + h * p.q_head;
  const T* kg = static_cast<const T*>(p.k) + kvh * p.k_head;
  float2* block_part = p.r.block_part + (static_cast<std::int64_t>(chunk) * p.q_heads + h) * kStage2Chunk * kBlock;

  mma::load_tile_async<D, kThreads>(
      sQ, kBlock, [&](int r) { return reinterpret_cast<const std::uint16_t*>(qg + r * p.q_tok); },
      [&](int r) { return r < L; });
  mma::cp_async_commit();
  mma::RowStat stat[2][2];               // each of this thread's rows over the chunk
  float in_block[2][2] = {{0.f, 0.f}, {0.f, 0.f}};  // ... and over the current key block
  const std::uint32_t q_lane = mma::lane_addr_a<D>(sQ, warp * 32), k_lane = mma::lane_addr_b<D>(sK, 0);

  for (int start = key_begin; start < key_end; start += kKeyTile) {
    __syncthreads();  // the previous tile is consumed
    mma::load_tile_async<D, kThreads>(
        sK, kKeyTile,
        [&](int r) {
          const std::int64_t row = start + r < len ? p.kv.row(s, start + r) : -1;
          return reinterpret_cast<const std::uint16_t*>(kg + (row >= 0 ? row : 0) * p.k_tok);
        },
        [&](int r) { return start + r < len && p.kv.row(s, start + r) >= 0; });
    mma::cp_async_commit();
    mma::cp_async_wait<0>();
    __syncthreads();
    float S[2][8][4];
    mma::warp_scores<D, 2, kBf16>(q_lane, k_lane, S);
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const int r = warp * 32 + mt * 16 + g + hr * 8;
        const int qi = first + r;
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int key = start + j * 8 + c * 2 + e;
            float x = S[mt][j][hr * 2 + e] * p.scale_log2;
            if (key > qi || key >= len || r >= L) x = -INFINITY;
            S[mt][j][hr * 2 + e] = x;
            mx = fmaxf(mx, x);
          }
        const float before = stat[mt][hr].max;
        const float base = stat[mt][hr].raise(mma::quad_max(mx));
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) sum += exp2f(S[mt][j][hr * 2 + e] - base);
        stat[mt][hr].sum += sum;
        // The block's sum so far moves to the new max (exp2(-inf) = 0 where it had none).
        in_block[mt][hr] = in_block[mt][hr] * exp2f(before - base) + sum;
      }
    // A key block ends after its second tile or at the chunk's end: its (max, sum) per row.
    if ((start - key_begin) % kBlock != 0 || start + kKeyTile >= key_end) {
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
          const float l = mma::quad_sum(in_block[mt][hr]);
          const int r = warp * 32 + mt * 16 + g + hr * 8;
          if (c == 0) block_part[((start - key_begin) / kBlock) * kBlock + r] = make_float2(stat[mt][hr].max, l);
          in_block[mt][hr] = 0.f;
        }
    }
  }

#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const float l = mma::quad_sum(stat[mt][hr].sum);
      const int r = warp * 32 + mt * 16 + g + hr * 8;
      if (c == 0) {
        float* e = p.r.partial + ((static_cast<std::int64_t>(chunk) * p.q_heads + h) * kBlock + r) * 2;
        e[0] = stat[mt][hr].max;
        e[1] = l;
      }
    }
  mma::cp_async_wait<0>();
}

// ---- stage 2, between its passes --------------------------------------------------------------
// One CTA per (sequence, head), one thread per query row: the row's log-sum-exp (base 2) from its
// chunks' (max, sum) pairs (+inf where it saw no key: a padding row), once, instead of in each of
// the row's pass-2 CTAs (one per chunk: 128 at 128K, each reading all 128 pairs of 128 rows).
// Two loops (the maximum, then the sums against it), so that the loads of each are independent.
__global__ void __launch_bounds__(kBlock) row_lse_kernel(EstimateParams p) {
  const int s = blockIdx.x, h = blockIdx.y, r = threadIdx.x;
  const int c0 = p.r.chunk_offset[s], n = p.r.chunk_offset[s + 1] - c0;
  const float* pair = p.r.partial + ((static_cast<std::int64_t>(c0) * p.q_heads + h) * kBlock + r) * 2;
  const std::int64_t stride = static_cast<std::int64_t>(p.q_heads) * kBlock * 2;
  float mx = -INFINITY;
#pragma unroll 8
  for (int i = 0; i < n; ++i) mx = fmaxf(mx, pair[i * stride]);
  float sum = 0.f;
  if (mx != -INFINITY)
#pragma unroll 8
    for (int i = 0; i < n; ++i) sum += pair[i * stride + 1] * exp2f(pair[i * stride] - mx);
  p.r.row_lse[(static_cast<std::int64_t>(s) * p.q_heads + h) * kBlock + r] = mx == -INFINITY ? INFINITY : mx + log2f(sum);
}

// ---- stage 2, after row_lse_kernel ---------------------------------------------------------------
// One CTA per (chunk, head), one thread per query row: the block masses from stage 2's (max, sum)
// of each key block and row, each scaled by exp2(max - the row's log-sum-exp), so that the scores
// are computed once. A padding row has sum 0 and log-sum-exp +inf, and adds 0.
__global__ void __launch_bounds__(kBlock) block_mass_kernel(EstimateParams p) {
  __shared__ float warp_sums[kBlock / 32][kStage2Chunk];
  const int chunk = blockIdx.x, h = blockIdx.y, r = threadIdx.x;
  const int s = p.r.chunk_seq[chunk];
  const int c_local = chunk - p.r.chunk_offset[s];
  const int rows = min(kBlock, p.r.cu_seqlens[s + 1] - p.r.cu_seqlens[s]);
  const int nb = p.r.kv_block_offset[s + 1] - p.r.kv_block_offset[s];
  const int blocks_here = min(kStage2Chunk, nb - c_local * kStage2Chunk);
  const float lse = p.r.row_lse[(static_cast<std::int64_t>(s) * p.q_heads + h) * kBlock + r];
  const float2* part = p.r.block_part + (static_cast<std::int64_t>(chunk) * p.q_heads + h) * kStage2Chunk * kBlock;
#pragma unroll
  for (int k = 0; k < kStage2Chunk; ++k) {
    float v = 0.f;
    if (k < blocks_here) {
      const float2 e = part[k * kBlock + r];
      if (e.y != 0.f) v = e.y * exp2f(e.x - lse);
    }
    v = warp_sum(v);
    if (r % 32 == 0) warp_sums[r / 32][k] = v;
  }
  __syncthreads();
  if (r < blocks_here) {
    float total = 0.f;
#pragma unroll
    for (int w = 0; w < kBlock / 32; ++w) total += warp_sums[w][r];
    p.r.mass[static_cast<std::int64_t>(h) * p.num_kv_blocks + p.r.kv_block_offset[s] + c_local * kStage2Chunk + r] =
        total / rows;
  }
}

// ---- budgets and row counts ----------------------------------------------------------------
// One CTA per (sequence, head): the head's blocks sorted by stage-2 mass, largest first, ties to
// the lower index (est::mass_key), kept as the head's order for stage 3; k_h from the prefix sums
// of that order; then the stage-3 count of every row of the head (integers, rules.hpp) and their
// sum. A sequence without queries has no rows and budget 0.
__global__ void __launch_bounds__(kThreads) budget_kernel(EstimateParams p) {
  extern __shared__ unsigned long long keys[];  // [n], then the prefix sums [n]
  __shared__ int below, below_last;
  __shared__ unsigned long long kept_sum;
  const int s = blockIdx.x, h = blockIdx.y;
  const int bo = p.r.kv_block_offset[s];
  const int nb = p.r.kv_block_offset[s + 1] - bo;
  const int row0 = p.r.block_offset[s], rows = p.r.block_offset[s + 1] - row0, first = p.r.first_block[s];
  const bool has_queries = p.r.cu_seqlens[s + 1] > p.r.cu_seqlens[s];
  const int n = next_pow2(max(nb, 1));
  float* prefix = reinterpret_cast<float*>(keys + n);
  const float* mass = p.r.mass + static_cast<std::int64_t>(h) * p.num_kv_blocks + bo;
  bool bad = false;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    unsigned long long key = 0;  // padding sorts last
    if (i < nb) {
      bad |= !isfinite(mass[i]);
      key = est::mass_key(mass[i], i);
    }
    keys[i] = key;
  }
  if (threadIdx.x == 0) below = 0, below_last = 0, kept_sum = 0;
  bad = __syncthreads_or(bad);
  bitonic_sort_desc(keys, n);
  std::int32_t* order = p.r.head_order + static_cast<std::int64_t>(h) * p.num_kv_blocks + bo;
  for (int i = threadIdx.x; i < nb; i += kThreads) order[i] = est::key_block(keys[i]);
  std::int64_t k_h = has_queries ? nb : 0;  // gamma >= 1 or a NaN/Inf mass: keep everything (rules)
  std::int64_t k_last = k_h;                // the last query block's count (last_block_gamma)
  if (has_queries && !bad && p.gamma < 1.f && nb > 0) {  // else no sums to take
    // Inclusive prefix sums: each thread scans a contiguous segment, CUB scans the segments.
    using Scan = cub::BlockScan<float, kThreads>;
    __shared__ typename Scan::TempStorage scan_tmp;
    const int per = (nb + kThreads - 1) / kThreads, lo = min(nb, threadIdx.x * per), hi = min(nb, lo + per);
    float seg = 0.f;
    for (int i = lo; i < hi; ++i) seg += mass[est::key_block(keys[i])];
    float offset;
    Scan(scan_tmp).ExclusiveSum(seg, offset);
    for (int i = lo; i < hi; ++i) prefix[i] = offset += mass[est::key_block(keys[i])];
    __syncthreads();
    const rules::BudgetCut<float> cut = rules::budget_cut(prefix[nb - 1], p.gamma);
    const rules::BudgetCut<float> cut_last = rules::budget_cut(prefix[nb - 1], p.last_gamma);
    // The last block's own count only where its cut differs (last_block_gamma above gamma), in the
    // same pass as the head's: the same count otherwise, and its work and atomic cost 1-4% of
    // this kernel.
    const bool own_last = p.last_gamma != p.gamma;
    int count = 0, count_last = 0;
    if (own_last)
      for (int i = lo; i < hi; ++i) count += prefix[i] < cut.target, count_last += prefix[i] < cut_last.target;
    else
      for (int i = lo; i < hi; ++i) count += prefix[i] < cut.target;
    atomicAdd(&below, count);
    if (own_last) atomicAdd(&below_last, count_last);
    __syncthreads();
    k_h = rules::budget_from_count_below(cut, below, nb);
    k_last = own_last ? rules::budget_from_count_below(cut_last, below_last, nb) : k_h;
  }
  if (threadIdx.x == 0) p.r.budget[s * p.q_heads + h] = static_cast<std::int32_t>(k_h);
  unsigned long long local = 0;
  // row_mass: each row's count from the head's order over its causal prefix (O(nb) a row).
  auto block_at = [&](std::int64_t j) { return static_cast<std::int64_t>(est::key_block(keys[j])); };
  auto mass_at = [&](std::int64_t j) { return mass[est::key_block(keys[j])]; };
  auto prefix_count = [&](std::int64_t r) { return rules::prefix_budget<float>(block_at, mass_at, nb, r, p.gamma); };
  for (int i = threadIdx.x; i < rows; i += kThreads) {  // rows: absolute blocks first + i
    const std::int64_t base = rules::row_base(k_h, k_last, first + i, nb, p.budget_mode, prefix_count);
    const std::int64_t cnt = rules::row_budget(base, first + i, nb, p.min_blocks, p.keep_sink, p.budget_mode);
    p.r.counts[static_cast<std::int64_t>(row0 + i) * p.q_heads + h] = cnt;
    local += cnt;
  }
  atomicAdd(&kept_sum, local);
  __syncthreads();
  if (threadIdx.x == 0) p.r.kept[s * p.q_heads + h] = static_cast<std::int64_t>(kept_sum);
}

// ---- stages 1 and 3 ------------------------------------------------------------------------
// One CTA per (query block, group). The block's strided proxy queries (at most 128 / stride,
// in chunks of 64 rows) against the causal strided proxy keys: pass 1 gives each row's
// log-sum-exp, pass 2 the maximum of (score - lse) per key block. Then the unforced blocks are
// ranked once (score descending, index ascending) and each head of the group writes its prefix.
template <class T, int D>
__global__ void __launch_bounds__(kThreads) stage1_kernel(EstimateParams p, int tile_bytes, int key_rows) {
  constexpr bool kBf16 = Elem<T>::is_bf16;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  unsigned char* smem = mma::align_tiles<D>(smem_raw);
  std::uint16_t* sQ = reinterpret_cast<std::uint16_t*>(smem);  // 64 x D
  std::uint16_t* sK = sQ + 64 * D;                                 // key_rows x D
  unsigned long long* keys = reinterpret_cast<unsigned long long*>(smem);  // after the scores
  float* amax = reinterpret_cast<float*>(smem + tile_bytes);             // [sort_size], then the ranks
  __shared__ float stat_max[4][16], stat_sum[4][16], lse2[64];

  const int b = p.num_blocks - 1 - blockIdx.x;  // long rows first
  const int j = blockIdx.y;
  const int s = p.r.block_seq[b];
  const int m = b - p.r.block_offset[s] + p.r.first_block[s];  // the absolute query block
  const SeqSpan seq(p, s);
  const int na = (seq.kv_len + p.stride - 1) / p.stride;
  const int a_first = (seq.q_off + p.stride - 1) / p.stride;  // the first strided query
  const int per_block = kBlock / p.stride;
  const int a0 = m * per_block, a1 = min(na, a0 + per_block);
  const T* qbar = static_cast<const T*>(p.r.qbar) + (j * p.total_strided + p.r.strided_offset[s]) * D;
  const T* kbar = static_cast<const T*>(p.r.kbar) + (j * p.total_strided + p.r.strided_offset[s]) * D;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;

  for (int n = threadIdx.x; n <= m; n += kThreads) amax[n] = -INFINITY;

  for (int c0 = a0; c0 < a1; c0 += 64) {
    const int rows = min(64, a1 - c0);
    const int mtiles = (rows + 15) / 16;
    const int mtiles_p2 = mtiles == 1 ? 1 : mtiles == 2 ? 2 : 4;
    // Warps sharing an m-tile split its key tiles, as many as the key buffer holds tiles.
    const int warps_per_tile = min(4 / mtiles_p2, key_rows / 64);
    const int my_mt = warp / warps_per_tile, my_sub = warp % warps_per_tile;
    const bool active = my_mt < mtiles;
    const int last = c0 + rows - 1;  // last strided query: keys 0..last are causal
    const int key_tiles = last / 64 + 1;
    const int rounds = (key_tiles + warps_per_tile - 1) / warps_per_tile;

    __syncthreads();
    mma::load_tile_async<D, kThreads>(
        sQ, 64, [&](int r) { return reinterpret_cast<const std::uint16_t*>(qbar + static_cast<std::int64_t>(c0 + r) * D); },
        [&](int r) { return r < rows; });
    mma::cp_async_commit();

    for (int pass = 0; pass < 2; ++pass) {
      mma::RowStat stat[2];
      for (int round = 0; round < rounds; ++round) {
        const int key0 = round * warps_per_tile * 64;
        __syncthreads();
        mma::load_tile_async<D, kThreads>(
            sK, warps_per_tile * 64,
            [&](int r) { return reinterpret_cast<const std::uint16_t*>(kbar + static_cast<std::int64_t>(key0 + r) * D); },
            [&](int r) { return key0 + r <= last; });
        mma::cp_async_commit();
        mma::cp_async_wait<0>();
        __syncthreads();
        const int start = key0 + my_sub * 64;
        if (!active || start > last) continue;
        float S[1][8][4];
        mma::warp_scores<D, 1, kBf16>(mma::lane_addr_a<D>(sQ, my_mt * 16), mma::lane_addr_b<D>(sK, my_sub * 64), S);
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
          const int r = my_mt * 16 + g + hr * 8;
          // The row's last causal key; -1 masks a padding row or one before the first query.
          const int a = r >= rows || c0 + r < a_first ? -1 : c0 + r;
          float mx = -INFINITY;
#pragma unroll
          for (int jj = 0; jj < 8; ++jj)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int key = start + jj * 8 + c * 2 + e;
              const bool masked = key > a;
              float x = S[0][jj][hr * 2 + e] * p.scale_log2;
              if (pass == 1 && !masked) x -= lse2[r];
              if (masked) x = -INFINITY;
              S[0][jj][hr * 2 + e] = x;
              mx = fmaxf(mx, x);
            }
          if (pass == 0) {
            const float base = stat[hr].raise(mma::quad_max(mx));
#pragma unroll
            for (int jj = 0; jj < 8; ++jj)
#pragma unroll
              for (int e = 0; e < 2; ++e) stat[hr].sum += exp2f(S[0][jj][hr * 2 + e] - base);
          }
        }
        if (pass == 1) {
#pragma unroll
          for (int jj = 0; jj < 8; ++jj) {
            float v = fmaxf(fmaxf(S[0][jj][0], S[0][jj][1]), fmaxf(S[0][jj][2], S[0][jj][3]));
            v = warp_max(v);
            if (lane == 0 && v > -INFINITY) atomic_max_float(&amax[(start + jj * 8) / per_block], v);
          }
        }
      }
      if (pass == 0) {  // rows' log-sum-exp: quads, then the warps that split the keys
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
          const float l = mma::quad_sum(stat[hr].sum);
          if (c == 0) stat_max[warp][g + hr * 8] = stat[hr].max, stat_sum[warp][g + hr * 8] = l;
        }
        __syncthreads();
        if (threadIdx.x < rows) {
          const int r = threadIdx.x, mt = r / 16;
          mma::RowStat row;
          for (int w = mt * warps_per_tile; w < (mt + 1) * warps_per_tile; ++w)
            row.merge(stat_max[w][r % 16], stat_sum[w][r % 16]);
          lse2[r] = row.lse();
        }
        __syncthreads();
      }
    }
  }
  __syncthreads();

  rank_and_write<kThreads>(p, amax, keys, b, m, j);
}

// Every kernel declares its dynamic shared memory: above 48 KB, static plus dynamic needs it.
template <class Kernel>
void allow_smem(Kernel kernel, std::size_t bytes) {
  PROXYATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

}  // namespace

template <class T, int D>
void choose_estimate_kernels(const EstimateShape& s, int device, int sms, bool sm90, bool always, int split,
                             Kernels* k) {
  k->stage1 = k->stage2 = Arch::sm80;
  if (!sm90 || !sm90::stage2_sm90_available<T, D>(device)) return;
  k->stage2 = Arch::sm90;
  if (!sm90::stage1_sm90_available<T, D>(device)) return;
  const sm90::Stage1Shape shape =
      sm90::stage1_sm90_shape<D>(s.sort_size, s.stride, s.num_blocks, s.groups, sms, split, always);
  if (shape.rows == 0) return;
  k->stage1 = Arch::sm90;
  k->stage1_rows = shape.rows;
  k->stage1_split = shape.split;
  k->stage1_smem = shape.smem;
}

template <class T, int D>
void launch_estimate_before_scan(const EstimateParams& p, const Kernels& k, cudaStream_t stream) {
  if (p.total_strided > 0) {
    proxy_kernel<T, D><<<dim3(static_cast<unsigned>(p.total_strided), p.groups), kThreads, 0, stream>>>(p);
    PROXYATTN_LAUNCH_CHECK("proxy_kernel");
  }
  if (p.total_chunks > 0) {
    if (k.stage2 == Arch::sm90) {
      sm90::launch_stage2_sm90<T, D>(p, stream);
    } else {
      const std::size_t smem = (kBlock + kKeyTile) * D * 2 + 2 * D;  // + alignment slack
      allow_smem(stage2_kernel<T, D>, smem);
      stage2_kernel<T, D><<<dim3(p.total_chunks, p.q_heads), kThreads, smem, stream>>>(p);
      PROXYATTN_LAUNCH_CHECK("stage2_kernel");
    }
    row_lse_kernel<<<dim3(p.num_seqs, p.q_heads), kBlock, 0, stream>>>(p);
    PROXYATTN_LAUNCH_CHECK("row_lse_kernel");
    block_mass_kernel<<<dim3(p.total_chunks, p.q_heads), kBlock, 0, stream>>>(p);
    PROXYATTN_LAUNCH_CHECK("block_mass_kernel");
  }
  if (p.num_seqs > 0) {
    const std::size_t smem = static_cast<std::size_t>(p.sort_size) * (sizeof(unsigned long long) + sizeof(float));
    allow_smem(budget_kernel, smem);
    budget_kernel<<<dim3(p.num_seqs, p.q_heads), kThreads, smem, stream>>>(p);
    PROXYATTN_LAUNCH_CHECK("budget_kernel");
  }
}

template <class T, int D>
void launch_estimate_after_scan(const EstimateParams& p, const Kernels& k, cudaStream_t stream) {
  if (p.num_blocks == 0) return;
  if (k.stage1 == Arch::sm90) {
    sm90::launch_stage1_sm90<T, D>(p, {k.stage1_rows, k.stage1_split, k.stage1_smem}, stream);
    return;
  }
  // Key buffer: one 64-key tile per warp that shares an m-tile of a full query block, so that the
  // common strides (4: two m-tiles, two warps each) take 48 KB at D = 128 and four CTAs fit on
  // an SM: the loads of one CTA hide behind the others' math.
  const int rows = std::min(64, kBlock / p.stride);
  const int mtiles = (rows + 15) / 16;
  const int key_rows = 64 * (4 / (mtiles == 1 ? 1 : mtiles == 2 ? 2 : 4));
  const int tile_bytes =
      static_cast<int>(std::max<std::size_t>((64 + key_rows) * D * 2, p.sort_size * sizeof(unsigned long long)));
  const std::size_t smem = tile_bytes + static_cast<std::size_t>(p.sort_size) * sizeof(float) + 2 * D;
  allow_smem(stage1_kernel<T, D>, smem);
  stage1_kernel<T, D><<<dim3(p.num_blocks, p.groups), kThreads, smem, stream>>>(p, tile_bytes, key_rows);
  PROXYATTN_LAUNCH_CHECK("stage1_kernel");
}

#define PROXYATTN_INSTANTIATE(T, D)                                                                              \
  template void choose_estimate_kernels<T, D>(const EstimateShape&, int, int, bool, bool, int, Kernels*);        \
  template void launch_estimate_before_scan<T, D>(const EstimateParams&, const Kernels&, cudaStream_t);          \
  template void launch_estimate_after_scan<T, D>(const EstimateParams&, const Kernels&, cudaStream_t);
PROXYATTN_CUDA_KERNELS(PROXYATTN_INSTANTIATE)
#undef PROXYATTN_INSTANTIATE

}  // namespace proxyattn::detail::cuda
