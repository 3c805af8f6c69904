// Tensor-core tile primitives for sm_80+ (mma.sync m16n8k16, ldmatrix, cp.async), shared by the
// attention kernel and the estimator kernels.
//
// Shared-memory tiles hold rows of D 16-bit elements with the 16-byte chunks of each row
// XOR-swizzled by (row % 8), so that the 8 row addresses of an ldmatrix hit 8 different bank
// groups. Fragment layouts follow the PTX ISA for mma.m16n8k16 (g = lane / 4, c = lane % 4):
//   A (16x16): a0 (g, 2c..2c+1) a1 (g+8, 2c..) a2 (g, 2c+8..) a3 (g+8, 2c+8..)
//   B (16x8):  b0 (k 2c..2c+1, n g) b1 (k 2c+8.., n g)
//   C (16x8):  c0,c1 (g, 2c..2c+1) c2,c3 (g+8, 2c..2c+1)
#pragma once

#include <cstdint>

#include "cuda/common.cuh"

namespace proxyattn::detail::cuda::mma {

// Element offset of (row, col) in a swizzled tile of D columns; col a multiple of 8.
template <int D>
__device__ __forceinline__ int swz(int row, int col) {
  static_assert(D % 64 == 0, "the swizzle needs at least 8 chunks of 16 bytes per row");
  return row * D + ((((col >> 3) ^ (row & 7))) << 3);
}

__device__ __forceinline__ std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte asynchronous copy; src_bytes 0 writes zeros (rows past the end of a sequence).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async16(std::uint32_t dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
// Copies rows [0, kRows) of a tile, row r from src_row0 + r * stride (elements), into the
// swizzled tile at shared address dst (2D-byte aligned) with 128 threads; rows >= valid_rows are
// zero-filled.
// The stride is in elements and below 2^24 (checked by the backend), so row offsets within a
// tile are 32-bit: half the registers when the compiler keeps them across the main loop.
template <int D, int kRows>
__device__ __forceinline__ void load_rows_async(std::uint32_t dst, const std::uint16_t* src_row0, int stride,
                                                int valid_rows) {
  constexpr int kChunks = D / 8, kRowStep = 128 / kChunks;
  const int ch = threadIdx.x % kChunks, r0 = threadIdx.x / kChunks;
  const std::uint16_t* src = src_row0 + r0 * stride + ch * 8;
#pragma unroll
  for (int i = 0; i < kRows / kRowStep; ++i) {
    const int r = r0 + i * kRowStep;
    const bool ok = r < valid_rows;
    cp_async16(dst + r * 2 * D + ((ch ^ (r & 7)) << 4), ok ? src + i * kRowStep * stride : src_row0, ok);
  }
}

// The same with each row's address from row_ptr(r) (null: a zero row; the copy then gets `any`,
// a readable address it does not read): keys in the pages of a cache.
template <int D, int kRows, class RowPtr>
__device__ __forceinline__ void load_rows_async_each(std::uint32_t dst, const std::uint16_t* any, RowPtr row_ptr) {
  constexpr int kChunks = D / 8, kRowStep = 128 / kChunks;
  const int ch = threadIdx.x % kChunks, r0 = threadIdx.x / kChunks;
#pragma unroll
  for (int i = 0; i < kRows / kRowStep; ++i) {
    const int r = r0 + i * kRowStep;
    const std::uint16_t* src = row_ptr(r);
    cp_async16(dst + r * 2 * D + ((ch ^ (r & 7)) << 4), src ? src + ch * 8 : any, src != nullptr);
  }
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// The XOR addressing below needs tiles aligned to 2D bytes; the dynamic shared memory base can
// sit elsewhere (static shared variables come first), so each launch adds 2D bytes of slack and
// the kernel skips to alignment here.
template <int D, class T>
__device__ __forceinline__ T* align_tiles(T* base) {
  const std::uint32_t mis = smem_addr(base) % (2 * D);
  return reinterpret_cast<T*>(reinterpret_cast<unsigned char*>(base) + (mis ? 2 * D - mis : 0));
}

// Lane addresses for x4 ldmatrix from a swizzled tile whose base is 2D-byte aligned, at row0 (a
// multiple of 8) and column 0. Because row % 8 == lane % 8 there, the swizzle of column chunk
// 2j (+ the lane's chunk bit) is a XOR of the byte address with 32 j: the address of column k0
// is lane_addr ^ (2 * k0), one instruction from one live register instead of one register per
// k-step (which is what spilled).
//   a: rows row0 + lane%8 + 8 * bit3(lane), chunk bit4(lane): A fragments (and V^T, .trans)
//   b: rows row0 + lane%8 + 8 * bit4(lane), chunk bit3(lane): B fragments of two n8 tiles
template <int D>
__device__ __forceinline__ std::uint32_t lane_addr_a(const std::uint16_t* tile, int row0) {
  const int lane = threadIdx.x & 31;
  const int row = row0 + (lane & 7) + ((lane >> 3) & 1) * 8;
  return smem_addr(tile) + row * 2 * D + ((((lane >> 4) & 1) ^ (lane & 7)) << 4);
}
template <int D>
__device__ __forceinline__ std::uint32_t lane_addr_b(const std::uint16_t* tile, int row0) {
  const int lane = threadIdx.x & 31;
  const int row = row0 + (lane & 7) + ((lane >> 4) & 1) * 8;
  return smem_addr(tile) + row * 2 * D + ((((lane >> 3) & 1) ^ (lane & 7)) << 4);
}

// C += A * B, bf16 or fp16 inputs, fp32 accumulators.
template <bool kBf16>
__device__ __forceinline__ void mma16816(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                         std::uint32_t b1) {
  if constexpr (kBf16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Copies `rows` rows of D elements into a swizzled tile with all threads of the block; rows
// with valid(r) false are zero-filled. row_ptr(r) gives the global address of row r.
template <int D, int kThreads, class RowPtr, class Valid>
__device__ __forceinline__ void load_tile_async(std::uint16_t* tile, int rows, RowPtr row_ptr, Valid valid) {
  constexpr int kChunks = D / 8;
  for (int i = threadIdx.x; i < rows * kChunks; i += kThreads) {
    const int r = i / kChunks, ch = i % kChunks;
    const bool ok = valid(r);
    const std::uint16_t* src = ok ? row_ptr(r) + ch * 8 : row_ptr(0);
    cp_async16(tile + swz<D>(r, ch * 8), src, ok);
  }
}

// S[16*MT x 16*NP] = Q K^T for one warp, from lane addresses (lane_addr_a of the Q tile at the
// warp's first row, lane_addr_b of the K tile at its first key). S is in C-fragment layout,
// [m16 tile][n8 tile][4].
template <int D, int MT, bool kBf16, int NP = 4>
__device__ __forceinline__ void warp_scores(std::uint32_t qa, std::uint32_t kb, float (&S)[MT][2 * NP][4]) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < 2 * NP; ++j) S[mt][j][0] = S[mt][j][1] = S[mt][j][2] = S[mt][j][3] = 0.f;
#pragma unroll
  for (int k0 = 0; k0 < D; k0 += 16) {
    std::uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) ldmatrix_x4(a[mt], (qa ^ (2 * k0)) + mt * 16 * 2 * D);
#pragma unroll
    for (int np = 0; np < NP; ++np) {
      std::uint32_t b[4];
      ldmatrix_x4(b, (kb ^ (2 * k0)) + np * 16 * 2 * D);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma16816<kBf16>(S[mt][2 * np], a[mt], b[0], b[1]);
        mma16816<kBf16>(S[mt][2 * np + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

// A running (max, sum of 2^(x - max)) of a softmax row in base 2. raise() moves the max to
// cover a block whose max is mx and returns the base to subtract from that block's scores; a
// row that has seen only -inf keeps base 0 so that exp2 gives 0, not NaN.
struct RowStat {
  float max = -INFINITY, sum = 0.f;
  __device__ __forceinline__ float raise(float mx) {
    const float m2 = fmaxf(max, mx);
    const float base = m2 == -INFINITY ? 0.f : m2;
    sum *= exp2f(max - base);
    max = m2;
    return base;
  }
  __device__ __forceinline__ void merge(float m, float s) {
    const float base = raise(m);
    sum += s * exp2f(m - base);
  }
  __device__ __forceinline__ float lse() const { return max == -INFINITY ? INFINITY : max + log2f(sum); }
};

// Maximum and sum over the 4 lanes of a quad (the lanes that share a row of a C fragment).
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

}  // namespace proxyattn::detail::cuda::mma
