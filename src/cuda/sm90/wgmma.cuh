// Warpgroup matrix multiply (wgmma, sm_90a) as raw PTX: shared-memory matrix descriptors, the
// two instruction forms the attention kernel uses (shared x shared for the scores, N = 64 or
// 128 keys; registers x shared for P V, N = D = 64, 128 or 256), and the fences that order them.
//
// Operand layout (what TMA writes with CU_TENSOR_MAP_SWIZZLE_128B from boxes 64 elements wide):
// a "panel" is R rows of 128 bytes (64 16-bit elements); in row r the 16-byte chunk j sits at
// chunk j ^ (r % 8). Eight rows form a 1024-byte atom; the panel base is 1024-byte aligned.
//   - K-major operand (A = Q rows x D, B = K keys x D): the 16-element k-step kk of one panel
//     starts 32 * (kk % 4) bytes into the panel (the hardware applies the swizzle to the address
//     bits, so advancing the start address inside the 128-byte row is exact); SBO = 1024 (the
//     next 8 rows), LBO unused for swizzled K-major operands (encoded as 1).
//   - MN-major operand (B = V keys x D, read transposed, imm-trans-b = 1): a k-step is 16 keys =
//     2 atoms, starting 2048 * kk bytes in; SBO = 1024 (the next 8 keys), LBO = the distance
//     between 64-column panels along N (D).
// Descriptor bits (PTX ISA, "matrix descriptor"): [0,14) start address >> 4, [16,30) LBO >> 4,
// [32,46) SBO >> 4, [49,52) base offset (0: atoms 1024-aligned), [62,64) swizzle (1 = 128 B).
//
// Fragments (m64nNk16, per warp w of the warpgroup, g = lane / 4, c = lane % 4):
//   accumulator d[4j + 2h + e] = (row 16w + g + 8h, column 8j + 2c + e)
//   register A  a[i] = two 16-bit values: a0 (row g, k 2c..2c+1), a1 (row g+8, k 2c..),
//                 a2 (row g, k 2c+8..), a3 (row g+8, k 2c+8..) (rows offset by 16w)
// so the accumulators of a score tile, packed in pairs, are the A registers of the next
// product: k-step kk takes d[8kk .. 8kk+7].
#pragma once

#include <cstdint>

namespace proxyattn::detail::cuda::sm90 {

__device__ __forceinline__ std::uint64_t desc_sw128(std::uint32_t smem_addr, std::uint32_t lbo, std::uint32_t sbo) {
  return static_cast<std::uint64_t>((smem_addr & 0x3FFFF) >> 4) | (static_cast<std::uint64_t>(lbo >> 4) << 16) |
         (static_cast<std::uint64_t>(sbo >> 4) << 32) | (std::uint64_t{1} << 62);
}
// A descriptor moved by `bytes` (a multiple of 16) within its swizzle atoms.
__device__ __forceinline__ std::uint64_t desc_advance(std::uint64_t desc, std::uint32_t bytes) {
  return desc + (bytes >> 4);
}

// wgmma.fence: before the first wgmma of a group and after registers that a wgmma reads or
// writes (accumulators, A fragments) were touched by other instructions.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N committed groups of this warpgroup are still running.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// Pins registers at this point of the instruction stream: the compiler cannot move their
// definitions below it nor their uses above it, and cannot reuse them across it. Placed before
// wgmma.fence (all writes done) and after wgmma.wait (results ready, A inputs no longer read).
template <int N>
__device__ __forceinline__ void pin(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void pin(std::uint32_t (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

#define PROXYATTN_WG_D64                                                                                          \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, " \
  "%24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, "  \
  "%46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define PROXYATTN_WG_D32                                                                                          \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, " \
  "%24, %25, %26, %27, %28, %29, %30, %31}"
#define PROXYATTN_WG_D128 \
  "{" \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, " \
  "%24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, " \
  "%72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
  "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, " \
  "%120, %121, %122, %123, %124, %125, %126, %127" \
  "}"
#define PROXYATTN_WG_OUT8(d, i) \
  "+f"(d[i + 0]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define PROXYATTN_WG_OUT32(d) PROXYATTN_WG_OUT8(d, 0), PROXYATTN_WG_OUT8(d, 8), PROXYATTN_WG_OUT8(d, 16), PROXYATTN_WG_OUT8(d, 24)
#define PROXYATTN_WG_OUT64(d) \
  PROXYATTN_WG_OUT32(d), PROXYATTN_WG_OUT8(d, 32), PROXYATTN_WG_OUT8(d, 40), PROXYATTN_WG_OUT8(d, 48), PROXYATTN_WG_OUT8(d, 56)
#define PROXYATTN_WG_OUT128(d)                                                                                     \
  PROXYATTN_WG_OUT64(d), PROXYATTN_WG_OUT8(d, 64), PROXYATTN_WG_OUT8(d, 72), PROXYATTN_WG_OUT8(d, 80),             \
      PROXYATTN_WG_OUT8(d, 88), PROXYATTN_WG_OUT8(d, 96), PROXYATTN_WG_OUT8(d, 104), PROXYATTN_WG_OUT8(d, 112),   \
      PROXYATTN_WG_OUT8(d, 120)

// d[64x128] (scale_d ? += : =) A[64x16] B[16x128]; A and B K-major in shared memory.
#define PROXYATTN_WG_SS_N128(TY)                                                                                \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                                     \
               "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " PROXYATTN_WG_D64 ", %64, %65, p, 1, 1, 0, 0;\n}\n" \
               : PROXYATTN_WG_OUT64(d)                                                                          \
               : "l"(a), "l"(b), "r"(scale_d))
// d[64x64], the same with 64 keys (the half-block key tiles of D = 256).
#define PROXYATTN_WG_SS_N64(TY)                                                                                 \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                                     \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " PROXYATTN_WG_D32 ", %32, %33, p, 1, 1, 0, 0;\n}\n" \
               : PROXYATTN_WG_OUT32(d)                                                                          \
               : "l"(a), "l"(b), "r"(scale_d))
// N = keys per tile: the accumulator array's size (N / 2 a thread) picks the instruction.
template <bool kBf16, int R>
__device__ __forceinline__ void mma_ss(float (&d)[R], std::uint64_t a, std::uint64_t b, int scale_d) {
  static_assert(R == 32 || R == 64, "N = 64 or 128");
  if constexpr (R == 32 && kBf16) PROXYATTN_WG_SS_N64("bf16");
  if constexpr (R == 32 && !kBf16) PROXYATTN_WG_SS_N64("f16");
  if constexpr (R == 64 && kBf16) PROXYATTN_WG_SS_N128("bf16");
  if constexpr (R == 64 && !kBf16) PROXYATTN_WG_SS_N128("f16");
}
#undef PROXYATTN_WG_SS_N128
#undef PROXYATTN_WG_SS_N64

// d[64xN] += A[64x16] B[16xN]; A in registers, B MN-major in shared memory (imm-trans-b = 1).
#define PROXYATTN_WG_RS_N128(TY)                                                                               \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                                    \
               "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " PROXYATTN_WG_D64                    \
               ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"                                                  \
               : PROXYATTN_WG_OUT64(d)                                                                          \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1))
#define PROXYATTN_WG_RS_N256(TY)                                                                               \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"                                                   \
               "wgmma.mma_async.sync.aligned.m64n256k16.f32." TY "." TY " " PROXYATTN_WG_D128                   \
               ", {%128, %129, %130, %131}, %132, p, 1, 1, 1;\n}\n"                                            \
               : PROXYATTN_WG_OUT128(d)                                                                         \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1))
#define PROXYATTN_WG_RS_N64(TY)                                                                                \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                                    \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " PROXYATTN_WG_D32                     \
               ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"                                                  \
               : PROXYATTN_WG_OUT32(d)                                                                          \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1))
// N = D: the accumulator array's size (D / 2 a thread) picks the instruction.
template <bool kBf16, int R>
__device__ __forceinline__ void mma_rs_tb(float (&d)[R], const std::uint32_t (&a)[4], std::uint64_t b) {
  static_assert(R == 32 || R == 64 || R == 128, "N = 64, 128 or 256");
  if constexpr (R == 32 && kBf16) PROXYATTN_WG_RS_N64("bf16");
  if constexpr (R == 32 && !kBf16) PROXYATTN_WG_RS_N64("f16");
  if constexpr (R == 64 && kBf16) PROXYATTN_WG_RS_N128("bf16");
  if constexpr (R == 64 && !kBf16) PROXYATTN_WG_RS_N128("f16");
  if constexpr (R == 128 && kBf16) PROXYATTN_WG_RS_N256("bf16");
  if constexpr (R == 128 && !kBf16) PROXYATTN_WG_RS_N256("f16");
}
#undef PROXYATTN_WG_RS_N128
#undef PROXYATTN_WG_RS_N64
#undef PROXYATTN_WG_RS_N256
#undef PROXYATTN_WG_D128
#undef PROXYATTN_WG_D64
#undef PROXYATTN_WG_D32
#undef PROXYATTN_WG_OUT8
#undef PROXYATTN_WG_OUT32
#undef PROXYATTN_WG_OUT64
#undef PROXYATTN_WG_OUT128

}  // namespace proxyattn::detail::cuda::sm90
