// Block-sparse flash-attention forward for sm90 (sm_90a): TMA loads into a two-stage mbarrier
// pipeline, wgmma from two consumer warpgroups, one producer warp. docs/kernels.md ("Sparse
// attention on sm90") has the design; the semantics are those of the sm80 kernel
// (sm80/attention.cuh): same AttentionParams (cuda/attention.hpp), same schedule, same masking
// and outputs.
//
// CTA = 3 warpgroups. Warpgroup 0 gives its registers away (setmaxnreg) and one of its warps
// issues the copies: Q of the work item, then K and V of each kept key block into stage
// (tile count % 2). Warpgroups 1 and 2 each own 64 of the 128 query rows; per key tile they
// compute S = Q K^T (wgmma, both operands in shared memory), the online softmax in registers, and
// O += P V (wgmma, P from registers, V read transposed from shared memory). The scores of tile
// i+1 are issued together with P V of tile i, so the softmax of tile i+1 overlaps the tensor
// cores; two named barriers hand the issue turn from one consumer warpgroup to the other, so
// that one's softmax runs while the other's products do.
//
// A query tile is one mask block (128 rows) and a key tile is one kept mask block (128 keys; at
// D = 256 half of one, 64 keys), so the tile sequence of a work item is the row of the CSR mask. Producer and consumers
// walk the same items in the same order and the same kept blocks of each, and count tiles the
// same way: every mbarrier wait has its arrival on every path (an empty row makes no copy and
// no wait on either side). items.cuh has the items and their tiles, softmax.cuh the softmax.
#pragma once

#include <cuda.h>

#include <algorithm>
#include <cstdint>

#include "cuda/attention.hpp"
#include "cuda/sm80/mma.cuh"
#include "cuda/sm90/binary.hpp"
#include "cuda/sm90/items.cuh"
#include "cuda/sm90/softmax.cuh"
#include "cuda/sm90/sync.cuh"
#include "cuda/sm90/wgmma.cuh"

namespace proxyattn::detail::cuda::sm90 {

constexpr int kThreads = 384;               // producer warpgroup + two consumer warpgroups
constexpr int kPanelBytes = kTile * 128;    // one 64-column panel of a Q tile (128 rows x 128 B)
constexpr int kProducerRegs = 24;           // 24 x 128 + 240 x 256 = 64512 = 168 x 384, the
constexpr int kConsumerRegs = 240;          // registers the CTA starts with (__launch_bounds__)
constexpr int kTurnBarrier = 1;             // named barriers 1, 2: consumer 0's / 1's turn
constexpr int kConsumerWarps = 8;           // arrivals on each "empty" barrier

// Shared memory: Q in two stages (Q of the next item loads while this one runs) or one at
// D = 256; K and V in two stages each. Each tile is D / 64 panels (16 KB for Q, key_tile x 128
// bytes for K and V): 192 KB at D = 128 and D = 256, 96 KB at D = 64. The base is aligned to
// 1024 bytes (the swizzle atom) inside the kernel, so the launcher adds 1 KB of slack.
template <int D>
struct SmemLayout {
  static constexpr int kPanels = D / 64;
  static constexpr int kKeys = key_tile(D);
  static constexpr int kSubTiles = kTile / kKeys;            // K/V tiles per kept mask block
  static constexpr int kKvPanelBytes = kKeys * 128;
  static constexpr int kQStages = D == 256 ? 1 : 2;
  static constexpr int kQBytes = kPanels * kPanelBytes;      // one Q stage
  static constexpr int kKvBytes = kPanels * kKvPanelBytes;   // one K (or V) stage
  static constexpr int kQ = 0;
  static constexpr int kK = kQStages * kQBytes;
  static constexpr int kV = kK + 2 * kKvBytes;
  static constexpr int kBytes = kV + 2 * kKvBytes;
  static constexpr int kLaunchBytes = kBytes + 1024;
  static_assert(kLaunchBytes <= 227 * 1024, "shared memory of one CTA on sm_90");
};

// The mbarriers, 8 bytes each from `base` (shared memory): addresses computed, not looked up
// in an array, so that a run-time stage index keeps them in registers.
struct Barriers {
  std::uint32_t base;
  __device__ __forceinline__ std::uint32_t q_full(int s) const { return base + 8 * s; }
  __device__ __forceinline__ std::uint32_t q_empty(int s) const { return base + 16 + 8 * s; }
  __device__ __forceinline__ std::uint32_t k_full(int s) const { return base + 32 + 8 * s; }
  __device__ __forceinline__ std::uint32_t k_empty(int s) const { return base + 48 + 8 * s; }
  __device__ __forceinline__ std::uint32_t v_full(int s) const { return base + 64 + 8 * s; }
  __device__ __forceinline__ std::uint32_t v_empty(int s) const { return base + 80 + 8 * s; }
  __device__ __forceinline__ std::uint32_t v_fix() const { return base + 96; }
  static constexpr int kCount = 13;
};

__device__ __forceinline__ void st_shared_zero16(std::uint32_t addr) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(addr), "r"(0) : "memory");
}

// One copy per 64-column panel of a tile, panel_bytes apart from dst, completing on `bar`.
template <int kPanels>
__device__ __forceinline__ void copy_panels(std::uint32_t dst, std::uint32_t panel_bytes, const CUtensorMap* map,
                                            std::uint32_t bar, int head, int token, std::uint64_t policy) {
#pragma unroll
  for (int pn = 0; pn < kPanels; ++pn) tma_load_3d(dst + pn * panel_bytes, map, bar, pn * 64, head, token, policy);
}

// One tile into shared memory at dst: its bytes announced on `bar` (one arrival with the byte
// count), then its panels. The producer's lane 0 calls it.
template <int kPanels>
__device__ __forceinline__ void load_tile(std::uint32_t dst, std::uint32_t panel_bytes, const CUtensorMap* map,
                                          std::uint32_t bar, int head, int token, std::uint64_t policy) {
  mbar_arrive_expect_tx(bar, kPanels * panel_bytes);
  copy_panels<kPanels>(dst, panel_bytes, map, bar, head, token, policy);
}

// Where the copy of the K or V tile at keys start .. start + kKeys - 1 begins: the token row in
// the view (packed keys, or a page, which holds whole tiles: kernels.cpp packs shorter pages). A
// page past the sequence's keys, or outside the cache (a bad table entry), is copied from beyond
// the end of the view: zeros. The producer reads it once for both K and V (a tile ahead where it
// reads ahead).
template <int D>
__device__ __forceinline__ int kv_tile_row(const AttentionParams& p, const Item& it, int start) {
  const std::int64_t row = !p.kv.table ? it.kv_begin + start : start < it.len ? p.kv.row(it.s, start) : -1;
  return static_cast<int>(row < 0 ? p.total_kv_tokens : row);
}

// Copies one K or V tile (row from kv_tile_row), announced on `bar`; the whole producer warp calls
// it. Lane 0 announces the bytes, the warp meets, then the lane that holds a row (lane 0: `row` is
// -1 in the others) issues the copies: faster on the Llama-3.1-8B full mask at 128K than all of it
// from lane 0 in one branch (bench/results/2026-12-03_h200_refactor_ab).
template <int D>
__device__ __forceinline__ void load_kv_tile(std::uint32_t dst, const CUtensorMap* map, std::uint32_t bar, int kvh,
                                             int row, std::uint64_t policy, int lane) {
  using L = SmemLayout<D>;
  if (lane == 0) mbar_arrive_expect_tx(bar, L::kPanels * L::kKvPanelBytes);
  __syncwarp();
  if (row >= 0) copy_panels<L::kPanels>(dst, L::kKvPanelBytes, map, bar, kvh, row, policy);
}

// The producer warp: Q of each item, then K and V of each kept block. Lane 0 issues; the whole
// warp waits (so that it stays converged), reads the mask's indices a chunk ahead (KeyTiles, as
// the consumers: the Llama-3.1-8B full mask at 128K 1.1% faster than one load per tile in the
// same run, bench/results/2026-12-03_h200_refactor_ab/cli_full_mask.txt) and zeroes rows in the
// one case below.
template <int D, bool kPaged>
__device__ __forceinline__ void produce(const AttentionParams& p, const CUtensorMap* tq, const CUtensorMap* tk,
                                        const CUtensorMap* tv, const Barriers& bar, std::uint32_t smem, int lane) {
  using L = SmemLayout<D>;
  std::uint32_t tiles = 0, items = 0, fixes = 0;
  // The copy policies, built once: Q is read once (evict_first); K/V are read again by the kv
  // group's other heads and query blocks (evict_last).
  const std::uint64_t q_policy = l2_evict_first();
  const std::uint64_t kv_policy = l2_evict_last();
  // Where the next tile's mask index and rows (a table read for paged keys) are read: between
  // this tile's K and V copies (read ahead: their loads overlap the wait for V's stage), or after
  // V's copy. Measured (bench/results/2026-12-03_h200_kvcache/producer_order, ../refactor_ab):
  // reading ahead makes paged keys about 5% faster (dense through pages of 128 at 128K), D = 256
  // 3-6% faster, and contiguous keys at D <= 128 3% slower. Both places in one kernel spill the
  // producer's 24 registers, hence the template parameter.
  constexpr bool kReadAhead = kPaged || D == 256;
  ItemOrder order(p.num_items);
  for (int index = order.next(); index >= 0; index = order.next()) {
    const Item it = decode_item(p, index);
    KeyTiles<L::kSubTiles> keys(it);
    int start = keys.next();
    if (start < 0) continue;  // empty row: the consumers write zeros without waiting
    int row = kReadAhead ? kv_tile_row<D>(p, it, start) : -1;
    // A Q stage is free once both consumer warpgroups finished the products of the item that
    // last used it (kQStages items ago).
    const int qs = items % L::kQStages;
    mbar_wait(bar.q_empty(qs), ((items / L::kQStages) & 1) ^ 1);
    ++items;
    if (lane == 0)
      load_tile<L::kPanels>(smem + L::kQ + qs * L::kQBytes, kPanelBytes, tq, bar.q_full(qs), it.h,
                            static_cast<int>(it.q_tok0), q_policy);
    do {
      const int stage = tiles & 1;
      const std::uint32_t parity = ((tiles >> 1) & 1) ^ 1;  // first pass over a stage: no wait
      ++tiles;
      const std::uint32_t k_dst = smem + L::kK + stage * L::kKvBytes;
      const std::uint32_t v_dst = smem + L::kV + stage * L::kKvBytes;
      if constexpr (!kReadAhead) row = kv_tile_row<D>(p, it, start);
      const int lane_row = lane == 0 ? row : -1;  // the copying lane's row (load_kv_tile)
      mbar_wait(bar.k_empty(stage), parity);
      load_kv_tile<D>(k_dst, tk, bar.k_full(stage), it.kvh, lane_row, kv_policy, lane);
      int next = -1, next_row = -1;
      if constexpr (kReadAhead) {
        next = keys.next();
        next_row = next >= 0 ? kv_tile_row<D>(p, it, next) : -1;
      }
      mbar_wait(bar.v_empty(stage), parity);
      const int valid = it.len - start;  // rows of this tile inside the sequence (> 0)
      if (valid >= L::kKeys || (!p.kv.table && it.kv_begin + it.len >= p.total_kv_tokens)) {
        // Whole tile in the sequence, or its tail past the end of the tensor (zero-filled).
        load_kv_tile<D>(v_dst, tv, bar.v_full(stage), it.kvh, lane_row, kv_policy, lane);
      } else {
        // The tile runs into the next sequence (or the rest of its last page). Its probabilities
        // there are 0, but 0 * NaN or 0 * Inf in those rows of V would still leak across the
        // boundary: load, zero those rows, then publish (ordinary stores read by wgmma: proxy
        // fence before the arrival).
        load_kv_tile<D>(v_dst, tv, bar.v_fix(), it.kvh, lane_row, kv_policy, lane);
        mbar_wait(bar.v_fix(), fixes & 1);
        ++fixes;
        // A row is 128 contiguous bytes of each panel whatever the swizzle: 8 chunks of 16.
#pragma unroll
        for (int pn = 0; pn < L::kPanels; ++pn)
          for (int r = valid + lane / 8; r < L::kKeys; r += 4)
            st_shared_zero16(v_dst + pn * L::kKvPanelBytes + r * 128 + (lane % 8) * 16);
        fence_proxy_async();
        __syncwarp();
        if (lane == 0) mbar_arrive(bar.v_full(stage));
      }
      if constexpr (kReadAhead) {
        start = next;
        row = next_row;
      } else {
        start = keys.next();
      }
    } while (start >= 0);
  }
}

// S[64 x keys] = Q K^T for this warpgroup's 64 rows: D / 16 k-steps over the panels of Q and K.
template <int D, bool kBf16>
__device__ __forceinline__ void issue_scores(float (&S)[key_tile(D) / 2], std::uint64_t q_desc, std::uint64_t k_desc) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const std::uint32_t q_off = (kk / 4) * kPanelBytes + (kk % 4) * 32;
    const std::uint32_t k_off = (kk / 4) * SmemLayout<D>::kKvPanelBytes + (kk % 4) * 32;
    mma_ss<kBf16>(S, desc_advance(q_desc, q_off), desc_advance(k_desc, k_off), kk > 0 ? 1 : 0);
  }
}

// O[64 x D] += P V: k-steps of 16 keys, P from registers (the packed scores), V transposed.
template <int D, bool kBf16>
__device__ __forceinline__ void issue_pv(float (&O)[D / 2], const std::uint32_t (&P)[key_tile(D) / 4],
                                         std::uint64_t v_desc) {
#pragma unroll
  for (int kk = 0; kk < key_tile(D) / 16; ++kk) {
    const std::uint32_t a[4] = {P[4 * kk], P[4 * kk + 1], P[4 * kk + 2], P[4 * kk + 3]};
    mma_rs_tb<kBf16>(O, a, desc_advance(v_desc, kk * 2048));
  }
}

// This warp's 16 rows of S = Q K^T once more, with mma.sync from the tiles in shared memory (128-
// byte swizzle, 64-column panels): the rare path of softmax_try, taken by one warp alone, where
// wgmma would need the whole warpgroup. S comes out in wgmma's accumulator layout, which is
// mma.sync's C layout for each 8-key column group. q_rows: the warp's first row in the Q tile.
template <int D, bool kBf16, int N>
__device__ __forceinline__ void warp_scores_again(float (&S)[N], std::uint32_t q_tile, std::uint32_t k_tile,
                                               int q_rows, int lane) {
  constexpr int kKeys = 2 * N;
  constexpr int kKPanel = kKeys * 128;
#pragma unroll
  for (int i = 0; i < N; ++i) S[i] = 0.f;
  const int qr = q_rows + (lane & 7) + ((lane >> 3) & 1) * 8;  // ldmatrix rows: A fragments
  const int kr = (lane & 7) + ((lane >> 4) & 1) * 8;           // and B fragments of two n8 tiles
#pragma unroll 1
  for (int k0 = 0; k0 < D; k0 += 16) {
    const int pn = k0 / 64, ch = (k0 % 64) / 8;
    std::uint32_t a[4];
    const int qc = ch + (lane >> 4);
    mma::ldmatrix_x4(a, q_tile + pn * kPanelBytes + qr * 128 + ((qc ^ (qr & 7)) << 4));
#pragma unroll
    for (int np = 0; np < kKeys / 16; ++np) {
      std::uint32_t b[4];
      const int r = np * 16 + kr, kc = ch + ((lane >> 3) & 1);
      mma::ldmatrix_x4(b, k_tile + pn * kKPanel + r * 128 + ((kc ^ (r & 7)) << 4));
      float c0[4] = {S[8 * np], S[8 * np + 1], S[8 * np + 2], S[8 * np + 3]};
      float c1[4] = {S[8 * np + 4], S[8 * np + 5], S[8 * np + 6], S[8 * np + 7]};
      mma::mma16816<kBf16>(c0, a, b[0], b[1]);
      mma::mma16816<kBf16>(c1, a, b[2], b[3]);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        S[8 * np + e] = c0[e];
        S[8 * np + 4 + e] = c1[e];
      }
    }
  }
}

// All lanes have passed wgmma.wait (their reads of the stage are complete); one arrival per warp.
__device__ __forceinline__ void warp_release(std::uint32_t bar, int lane) {
  __syncwarp();
  if (lane == 0) mbar_arrive(bar);
}

// A consumer warpgroup (cw = 0, 1: query rows 64 cw .. 64 cw + 63 of each item).
template <class T, int D>
__device__ __forceinline__ void consume(const AttentionParams& p, const Barriers& bar, std::uint32_t smem, int cw) {
  using L = SmemLayout<D>;
  constexpr bool kBf16 = Elem<T>::is_bf16;
  const int tid = static_cast<int>(threadIdx.x) - 128 * (cw + 1);
  const int warp = tid / 32, lane = tid % 32, c = lane % 4;
  const int row0 = 64 * cw + 16 * warp + lane / 4;  // tile rows row0 and row0 + 8
  const std::uint64_t q_desc0 = desc_sw128(smem + L::kQ + cw * 64 * 128, 16, 1024);
  const std::uint64_t k_desc = desc_sw128(smem + L::kK, 16, 1024);
  const std::uint64_t v_desc = desc_sw128(smem + L::kV, L::kKvPanelBytes, 1024);
  const int my_turn = kTurnBarrier + cw, other_turn = kTurnBarrier + (cw ^ 1);
  if (cw == 0) named_arrive(my_turn, 256);  // consumer 0 issues first

  constexpr int kS = L::kKeys / 2;  // score accumulators of a 64 x kKeys tile per thread
  // softmax_try on all tiles after an item's first, except at D = 256: there the registers of its
  // rare path (the scores again, inlined) make the main loop spill, and as a call they would put
  // S in local memory.
  constexpr bool kTry = D != 256;
  float S[kS];
#pragma unroll
  for (int i = 0; i < kS; ++i) S[i] = 0.f;
  std::uint32_t P[kS / 2];
  std::uint32_t tiles = 0, items = 0;
  ItemOrder order(p.num_items);
  for (int index = order.next(); index >= 0; index = order.next()) {
    const Item it = decode_item(p, index);
    KeyTiles<L::kSubTiles> keys(it);
    int start = keys.next();
    bool diagonal = keys.diagonal();
    float O[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) O[i] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f}, rescale[2];
    if (start >= 0) {
      const int qs = items % L::kQStages;
      mbar_wait(bar.q_full(qs), (items / L::kQStages) & 1);
      ++items;
      const std::uint64_t q_desc = desc_advance(q_desc0, qs * L::kQBytes);
      // First tile: scores and softmax only; its P V goes out with the next tile's scores.
      int stage = tiles & 1;
      std::uint32_t parity = (tiles >> 1) & 1;
      ++tiles;
      int next = keys.next();
      bool next_diagonal = keys.diagonal();
      mbar_wait(bar.k_full(stage), parity);
      named_sync(my_turn, 256);
      pin(S);
      wgmma_fence();
      issue_scores<D, kBf16>(S, q_desc, desc_advance(k_desc, stage * L::kKvBytes));
      wgmma_commit();
      named_arrive(other_turn, 256);
      wgmma_wait<0>();
      pin(S);
      warp_release(bar.k_empty(stage), lane);
      // No max yet: nothing to try.
      softmax_exact<false>(S, row_max, row_sum, rescale, p.scale_log2, diagonal, row0, c, start % kTile);
      pack_probabilities<T>(P, S);
      while (next >= 0) {
        const int pv_stage = stage;
        const std::uint32_t pv_parity = parity;
        start = next;
        diagonal = next_diagonal;
        next = keys.next();
        next_diagonal = keys.diagonal();
        stage = tiles & 1;
        parity = (tiles >> 1) & 1;
        ++tiles;
        mbar_wait(bar.k_full(stage), parity);
        mbar_wait(bar.v_full(pv_stage), pv_parity);  // landed long ago: it was issued before K
        named_sync(my_turn, 256);
        pin(S);
        pin(O);
        pin(P);
        wgmma_fence();
        issue_scores<D, kBf16>(S, q_desc, desc_advance(k_desc, stage * L::kKvBytes));
        wgmma_commit();
        issue_pv<D, kBf16>(O, P, desc_advance(v_desc, pv_stage * L::kKvBytes));
        wgmma_commit();
        named_arrive(other_turn, 256);
        wgmma_wait<1>();  // the scores are done; P V may still run
        pin(S);
        bool moved;  // whether the warp's output needs rescaling (the same in every lane)
        if constexpr (kTry) {
          if (diagonal) mask_diagonal(S, row0, c, start % kTile);
          moved = false;
          if (!softmax_try(S, row_max, row_sum, p.scale_log2)) {
            // Rare (a row's max moves): the scores again, from the K tile not yet released.
            warp_scores_again<D, kBf16>(S, smem + L::kQ + qs * L::kQBytes, smem + L::kK + stage * L::kKvBytes,
                                        64 * cw + 16 * warp, lane);
            if (diagonal) mask_diagonal(S, row0, c, start % kTile);
            moved = softmax_exact<false, true>(S, row_max, row_sum, rescale, p.scale_log2, row0, c, 0);
          }
          warp_release(bar.k_empty(stage), lane);
        } else {
          warp_release(bar.k_empty(stage), lane);
          moved = softmax_exact<false>(S, row_max, row_sum, rescale, p.scale_log2, diagonal, row0, c, start % kTile);
        }
        pin(S);  // the whole softmax before the wait, where it overlaps P V
        pin(row_sum);
        if constexpr (!kTry) pin(rescale);
        wgmma_wait<0>();
        pin(O);
        pin(P);
        warp_release(bar.v_empty(pv_stage), lane);
        // At D = 256 the vote comes here, after the wait, and the mask inside softmax_exact's
        // diagonal instantiation: with both placed as at D <= 128, its dense case ran 8% slower.
        if (moved && (kTry || __any_sync(0xffffffffu, rescale[0] != 1.f || rescale[1] != 1.f)))
          rescale_rows(O, rescale);
        pack_probabilities<T>(P, S);
      }
      mbar_wait(bar.v_full(stage), parity);
      pin(O);
      pin(P);
      wgmma_fence();
      issue_pv<D, kBf16>(O, P, desc_advance(v_desc, stage * L::kKvBytes));
      wgmma_commit();
      wgmma_wait<0>();
      pin(O);
      pin(P);
      warp_release(bar.v_empty(stage), lane);
      warp_release(bar.q_empty(qs), lane);
    }

    // Epilogue: normalise, write O in the input dtype and LSE in natural log. Rows that are not
    // the sequence's queries (past its end, or before its first query) are not written.
    T* og = static_cast<T*>(p.o) + it.h * p.o_head;
    const int q0 = it.m * kTile;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = row0 + 8 * h;
      const float l = mma::quad_sum(row_sum[h]);
      if (q0 + r >= it.len || q0 + r < it.q_off) continue;
      const bool empty = row_max[h] == -INFINITY;
      const float inv = empty ? 0.f : 1.f / l;
      T* orow = og + (it.q_tok0 + r) * p.o_tok;
      // Streaming stores: the output is not read again here, so it should not push the K/V
      // tiles that other CTAs still read out of L2.
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        auto* dst = reinterpret_cast<unsigned int*>(orow + 8 * j + 2 * c);
        const unsigned int packed = Elem<T>::pack(O[4 * j + 2 * h] * inv, O[4 * j + 2 * h + 1] * inv);
        __stcs(dst, packed);
      }
      if (p.lse && c == 0)
        p.lse[it.h * p.total_tokens + it.q_tok0 + r] = empty ? -INFINITY : (row_max[h] + log2f(l)) * kLn2;
    }
  }
}

// kPaged: keys and values through a block table (p.kv.table), which decides the producer's order.
template <class T, int D, bool kPaged>
__global__ void __launch_bounds__(kThreads, 1)
    sparse_attention_sm90_kernel(const __grid_constant__ AttentionParams p, const __grid_constant__ CUtensorMap tq,
                                 const __grid_constant__ CUtensorMap tk, const __grid_constant__ CUtensorMap tv) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  __shared__ __align__(8) std::uint64_t barrier_words[Barriers::kCount];
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const std::uint32_t smem = (smem_u32(smem_raw) + 1023u) & ~1023u;
  const Barriers bar{smem_u32(barrier_words)};
  if (threadIdx.x == 0) {
    // full: one arrival (the producer's expect_tx) + the copied bytes; empty: one per consumer warp.
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      mbar_init(bar.q_full(s), 1);
      mbar_init(bar.q_empty(s), kConsumerWarps);
      mbar_init(bar.k_full(s), 1);
      mbar_init(bar.k_empty(s), kConsumerWarps);
      mbar_init(bar.v_full(s), 1);
      mbar_init(bar.v_empty(s), kConsumerWarps);
    }
    mbar_init(bar.v_fix(), 1);
    fence_mbar_init();
  }
  __syncthreads();

  const int warpgroup = uniform(static_cast<int>(threadIdx.x) / 128);
  if (warpgroup == 0) {
    regs_decrease<kProducerRegs>();
    if (threadIdx.x < 32) {
      const int lane = static_cast<int>(threadIdx.x);
      if (lane == 0) {
        prefetch_tensor_map(&tq);
        prefetch_tensor_map(&tk);
        prefetch_tensor_map(&tv);
      }
      produce<D, kPaged>(p, &tq, &tk, &tv, bar, smem, lane);
    }
  } else {
    regs_increase<kConsumerRegs>();
    consume<T, D>(p, bar, smem, warpgroup - 1);
  }
#else
  // Built for another target: the launcher never runs this (it checks the binary version).
  __trap();
#endif
}

// The launcher and its check, declared in cuda/attention.hpp.
template <class T, int D>
bool kernel_available(int device) {
  return sm90_code_runs<sparse_attention_sm90_kernel<T, D, false>>(device);
}

template <class T, int D>
void launch_sparse_attention_sm90(AttentionParams p, const TileMaps& maps, int grid, cudaStream_t stream) {
  p.tiles_per_block = 1;
  p.num_items = p.num_rows;
  if (p.num_items == 0) return;
  constexpr int smem = SmemLayout<D>::kLaunchBytes;
  auto kernel = p.kv.table ? sparse_attention_sm90_kernel<T, D, true> : sparse_attention_sm90_kernel<T, D, false>;
  PROXYATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  kernel<<<std::min(p.num_items, std::max(grid, 1)), kThreads, smem, stream>>>(p, maps.q, maps.k, maps.v);
  PROXYATTN_LAUNCH_CHECK("sparse_attention_sm90_kernel");
}

}  // namespace proxyattn::detail::cuda::sm90
