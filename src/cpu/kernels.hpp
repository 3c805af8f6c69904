// The fast CPU backend's building blocks: one register-tiled fp32 matrix product (scores and
// outputs are both C += A * B with B row-major), a vectorised exp2, and row conversion.
// Written with GCC/Clang vector extensions so that the compiler emits AVX2 or AVX-512 as the
// target allows, without intrinsics.
#pragma once

#include <cstdint>
#include <cstring>

#include "core/convert.hpp"
#include "core/tensor_access.hpp"
#include "proxyattn/tensor.hpp"

namespace proxyattn::detail::cpu {

constexpr int kLanes = 16;
typedef float vf __attribute__((vector_size(kLanes * sizeof(float))));
typedef std::int32_t vi __attribute__((vector_size(kLanes * sizeof(std::int32_t))));
typedef float vf_unaligned __attribute__((vector_size(kLanes * sizeof(float)), aligned(4)));

inline vf loadv(const float* p) { return *reinterpret_cast<const vf_unaligned*>(p); }
inline void storev(float* p, vf x) { *reinterpret_cast<vf_unaligned*>(p) = x; }

constexpr std::int64_t round_up(std::int64_t x, std::int64_t m) { return (x + m - 1) / m * m; }

// C[M x N] (+)= A[M x K] * B[K x N], all row-major fp32. N must be a multiple of kLanes.
void gemm(const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc,
          std::int64_t M, std::int64_t N, std::int64_t K, bool accumulate);

// 2^x lane by lane, relative error about 1e-7; exactly 0 below -126 (and for -inf); NaN stays NaN.
inline vf exp2v(vf x) {
  const vf lo = vf{} - 126.0f, hi = vf{} + 127.0f;
  const vi underflow = x < lo;
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;  // NaN compares false and passes through
  const vf magic = vf{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const vf rounded = x + magic;
  vi n;
  std::memcpy(&n, &rounded, sizeof n);
  n -= 0x4B400000;  // the bits of 12582912.0f
  const vf f = x - (rounded - magic);  // in [-0.5, 0.5]
  vf p = vf{} + 1.5403530e-4f;
  p = p * f + 1.3333558e-3f;
  p = p * f + 9.6181291e-3f;
  p = p * f + 5.5504109e-2f;
  p = p * f + 2.4022651e-1f;
  p = p * f + 6.9314718e-1f;
  p = p * f + 1.0f;
  vi bits;
  std::memcpy(&bits, &p, sizeof bits);
  bits += n << 23;
  vf r;
  std::memcpy(&r, &bits, sizeof r);
  return underflow ? vf{} : r;
}

inline float exp2s(float x) {
  vf v = vf{} + x;
  return exp2v(v)[0];
}

// Reads `dim` elements of row (token, head) of a [total, heads, dim] tensor as fp32, times `mul`.
inline void load_row(const TensorView& t, std::int64_t token, std::int64_t head, float* dst, float mul) {
  const std::int64_t dim = t.shape[2];
  const std::int64_t o = offset3(t, token, head, 0);
  switch (t.dtype) {
    case DType::float32: {
      const float* src = static_cast<const float*>(t.data) + o;
      for (std::int64_t d = 0; d < dim; ++d) dst[d] = src[d] * mul;
      break;
    }
    case DType::bfloat16: {
      const std::uint16_t* src = static_cast<const std::uint16_t*>(t.data) + o;
      for (std::int64_t d = 0; d < dim; ++d) dst[d] = convert::bf16_to_float(src[d]) * mul;
      break;
    }
    case DType::float16: {
      const std::uint16_t* src = static_cast<const std::uint16_t*>(t.data) + o;
      for (std::int64_t d = 0; d < dim; ++d) dst[d] = convert::half_to_float(src[d]) * mul;
      break;
    }
    default: break;
  }
}

inline void store_row(const TensorView& t, std::int64_t token, std::int64_t head, const float* src, float mul) {
  const std::int64_t dim = t.shape[2];
  const std::int64_t o = offset3(t, token, head, 0);
  switch (t.dtype) {
    case DType::float32: {
      float* dst = static_cast<float*>(t.data) + o;
      for (std::int64_t d = 0; d < dim; ++d) dst[d] = src[d] * mul;
      break;
    }
    case DType::bfloat16: {
      std::uint16_t* dst = static_cast<std::uint16_t*>(t.data) + o;
      for (std::int64_t d = 0; d < dim; ++d) dst[d] = convert::float_to_bf16(src[d] * mul);
      break;
    }
    case DType::float16: {
      std::uint16_t* dst = static_cast<std::uint16_t*>(t.data) + o;
      for (std::int64_t d = 0; d < dim; ++d) dst[d] = convert::float_to_half(src[d] * mul);
      break;
    }
    default: break;
  }
}

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

}  // namespace proxyattn::detail::cpu
