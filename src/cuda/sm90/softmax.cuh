// The online softmax of the sm90 attention kernel (sm90/attention.cuh) on one score tile in
// registers: wgmma's accumulator layout, where a thread holds two rows of the warp's 16 (row0 and
// row0 + 8) and S[4j + 2h + e] is key 8j + 2c + e of the tile for row h (c = lane % 4).
// docs/kernels.md ("Softmax") has why each step is where it is.
#pragma once

#include <cstdint>

#include "cuda/sm80/mma.cuh"

namespace proxyattn::detail::cuda::sm90 {

// How far (log2 units) a row's scores may exceed its running max before the max moves: the
// probabilities then stay below 2^8, harmless in the fp32 sums and in the bf16/fp16 P, and the
// LSE stays exact (running max + log2 of a sum taken against the same max).
constexpr float kMaxSlack = 8.f;

// The scores of a tile of the diagonal block (keys = the query tile) after the query are masked,
// and so are those past the end of the sequence. A thread holds rows row0 and row0 + 8 of the
// tile (h = 0, 1): S[4j + 2h + e] is key key0 + 8j + 2c + e of the block.
template <int N>
__device__ __forceinline__ void mask_diagonal(float (&S)[N], int row0, int c, int key0) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = row0 + 8 * h - key0;
#pragma unroll
    for (int j = 0; j < N / 4; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e)
        if (8 * j + 2 * c + e > r) S[4 * j + 2 * h + e] = -INFINITY;
  }
}

// Online softmax of one score tile in place, base 2 with the scale folded in (as the sm80
// kernel): S becomes 2^(S * scale_log2 - running max); the running max and the per-lane row sums
// move; rescale gets the factor the output accumulated so far must take.
// kDiagonal: mask the tile first (mask_diagonal). kVote: return (the same in every lane) whether
// some row of the warp has rescale != 1; else return true and leave that to the caller.
//
// Lazy rescaling: the running max moves only where the tile's max exceeds it by more than
// kMaxSlack, so that after the first tiles the output rarely needs rescaling. Whether a row's max
// moves is known from the lanes' own maxima: only where some lane of the warp exceeds its row's
// max by the slack does the warp need the quads' maxima (two shuffle rounds).
template <bool kDiagonal, bool kVote, int N>
__device__ __forceinline__ bool softmax_exact(float (&S)[N], float (&row_max)[2], float (&row_sum)[2],
                                              float (&rescale)[2], float scale_log2, int row0, int c, int key0) {
  if constexpr (kDiagonal) mask_diagonal(S, row0, c, key0);
  constexpr int J = N / 4;  // 8-key column groups
  float lane_max[2];  // this lane's maximum of each row's scores, scaled
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float m0 = -INFINITY, m1 = -INFINITY;
#pragma unroll
    for (int j = 0; j < J; ++j) {
      m0 = fmaxf(m0, S[4 * j + 2 * h]);
      m1 = fmaxf(m1, S[4 * j + 2 * h + 1]);
    }
    lane_max[h] = fmaxf(m0, m1) * scale_log2;
    rescale[h] = 1.f;
  }
  if (__any_sync(0xffffffffu, lane_max[0] > row_max[0] + kMaxSlack || lane_max[1] > row_max[1] + kMaxSlack)) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float mx = mma::quad_max(lane_max[h]);
      if (mx > row_max[h] + kMaxSlack) {
        rescale[h] = fast_exp2(row_max[h] - mx);
        row_max[h] = mx;
      }
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    // A row that has seen no key keeps -inf: subtract 0 so that exp2 gives 0, not NaN.
    const float base = row_max[h] == -INFINITY ? 0.f : row_max[h];
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const float p0 = fast_exp2(fmaf(S[4 * j + 2 * h], scale_log2, -base));
      const float p1 = fast_exp2(fmaf(S[4 * j + 2 * h + 1], scale_log2, -base));
      S[4 * j + 2 * h] = p0;
      S[4 * j + 2 * h + 1] = p1;
      s0 += p0;
      s1 += p1;
    }
    row_sum[h] = row_sum[h] * rescale[h] + (s0 + s1);  // per lane; the quad sums at the end
  }
  if constexpr (kVote) return __any_sync(0xffffffffu, rescale[0] != 1.f || rescale[1] != 1.f);
  return true;
}

// The diagonal and the other tiles in their own instantiations, so that the others carry no
// per-element test.
template <bool kVote, int N>
__device__ __forceinline__ bool softmax_exact(float (&S)[N], float (&row_max)[2], float (&row_sum)[2],
                                              float (&rescale)[2], float scale_log2, bool diagonal, int row0,
                                              int c, int key0) {
  if (diagonal) return softmax_exact<true, kVote>(S, row_max, row_sum, rescale, scale_log2, row0, c, key0);
  return softmax_exact<false, kVote>(S, row_max, row_sum, rescale, scale_log2, row0, c, key0);
}

// The usual tile, where no score exceeds its row's running max by the slack: the exponentials
// against the running max, with no maximum taken first. If every lane's sum of a row's
// probabilities in this tile is below 2^kMaxSlack, so is each probability, and no max moves:
// S and the sums are what softmax_exact gives. Otherwise (a score above the slack, a row with no
// max yet, NaN or Inf) it returns false, having changed nothing but S: the caller computes the
// scores again (their K tile is still in shared memory) and runs softmax_exact on them.
template <int N>
__device__ __forceinline__ bool softmax_try(float (&S)[N], const float (&row_max)[2], float (&row_sum)[2],
                                            float scale_log2) {
  constexpr int J = N / 4;
  float t[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    // -row_max: +inf for a row with no max yet, so that its sum is Inf or NaN and fails.
    const float base = -row_max[h];
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const float p0 = fast_exp2(fmaf(S[4 * j + 2 * h], scale_log2, base));
      const float p1 = fast_exp2(fmaf(S[4 * j + 2 * h + 1], scale_log2, base));
      S[4 * j + 2 * h] = p0;
      S[4 * j + 2 * h + 1] = p1;
      s0 += p0;
      s1 += p1;
    }
    t[h] = s0 + s1;
  }
  constexpr float kLimit = 1 << static_cast<int>(kMaxSlack);
  if (!__all_sync(0xffffffffu, t[0] < kLimit && t[1] < kLimit)) return false;  // NaN fails too
  row_sum[0] += t[0];
  row_sum[1] += t[1];
  return true;
}

template <class T, int N>
__device__ __forceinline__ void pack_probabilities(std::uint32_t (&P)[N / 2], const float (&S)[N]) {
#pragma unroll
  for (int i = 0; i < N / 2; ++i) P[i] = Elem<T>::pack(S[2 * i], S[2 * i + 1]);
}

template <int N>
__device__ __forceinline__ void rescale_rows(float (&O)[N], const float (&rescale)[2]) {
#pragma unroll
  for (int j = 0; j < N / 4; ++j) {
    O[4 * j] *= rescale[0];
    O[4 * j + 1] *= rescale[0];
    O[4 * j + 2] *= rescale[1];
    O[4 * j + 3] *= rescale[1];
  }
}

}  // namespace proxyattn::detail::cuda::sm90
