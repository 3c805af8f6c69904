// Rows of the [total, heads, dim] tensors as fp32, for the fast CPU backend.
#pragma once

#include <cstdint>

#include "core/convert.hpp"
#include "core/tensor_access.hpp"
#include "proxyattn/tensor.hpp"

namespace proxyattn::detail::cpu {

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
