// Element access to [total, heads, dim] host tensors of any float dtype, for the simple loops of
// the reference backend and the metrics (the fast backend converts whole rows instead).
#pragma once

#include <cstdint>

#include "core/convert.hpp"
#include "proxyattn/tensor.hpp"

namespace proxyattn::detail {

inline std::int64_t offset3(const TensorView& t, std::int64_t i, std::int64_t j, std::int64_t k) {
  return i * t.stride[0] + j * t.stride[1] + k * t.stride[2];
}

inline double load(const TensorView& t, std::int64_t i, std::int64_t j, std::int64_t k) {
  const std::int64_t o = offset3(t, i, j, k);
  switch (t.dtype) {
    case DType::float32: return static_cast<const float*>(t.data)[o];
    case DType::bfloat16: return convert::bf16_to_float(static_cast<const std::uint16_t*>(t.data)[o]);
    case DType::float16: return convert::half_to_float(static_cast<const std::uint16_t*>(t.data)[o]);
    default: return 0.0;
  }
}

inline void store(const TensorView& t, std::int64_t i, std::int64_t j, std::int64_t k, double value) {
  const std::int64_t o = offset3(t, i, j, k);
  const float f = static_cast<float>(value);
  switch (t.dtype) {
    case DType::float32: static_cast<float*>(t.data)[o] = f; break;
    case DType::bfloat16: static_cast<std::uint16_t*>(t.data)[o] = convert::float_to_bf16(f); break;
    case DType::float16: static_cast<std::uint16_t*>(t.data)[o] = convert::float_to_half(f); break;
    default: break;
  }
}

}  // namespace proxyattn::detail
