// Shared CUDA helpers: error checks and the 16-bit element types.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "core/check.hpp"

namespace proxyattn::detail::cuda {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail(ErrorCode::runtime, what, ": ", cudaGetErrorString(e));
}
#define PROXYATTN_CUDA_CHECK(call) ::proxyattn::detail::cuda::check((call), #call)
// After a launch: a bad configuration shows here, a fault at the next synchronisation.
#define PROXYATTN_LAUNCH_CHECK(name) ::proxyattn::detail::cuda::check(cudaGetLastError(), name)

template <class T>
struct Elem;
template <>
struct Elem<__nv_bfloat16> {
  static __device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
  // Two floats into one 32-bit register of a matrix fragment (low half = first).
  static __device__ __forceinline__ std::uint32_t pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    std::uint32_t bits;
    std::memcpy(&bits, &v, sizeof(bits));
    return bits;
  }
  static constexpr bool is_bf16 = true;
};
template <>
struct Elem<__half> {
  static __device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half from_float(float x) { return __float2half_rn(x); }
  static __device__ __forceinline__ std::uint32_t pack(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    std::uint32_t bits;
    std::memcpy(&bits, &v, sizeof(bits));
    return bits;
  }
  static constexpr bool is_bf16 = false;
};

constexpr int kKeyTile = 64;  // keys per tile of every score product

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// 2^x on the special-function unit: -inf gives +0, NaN stays NaN (what online softmax needs).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace proxyattn::detail::cuda
