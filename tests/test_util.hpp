// Test helpers: owned host tensors that can be poisoned, fresh random inputs (the seed is
// printed so a failure can be replayed with PROXYATTN_TEST_SEED), and error norms.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/convert.hpp"
#include "core/tensor_access.hpp"
#include "proxyattn/proxyattn.hpp"

namespace testutil {

using namespace proxyattn;

inline std::uint64_t fresh_seed() {
  if (const char* s = std::getenv("PROXYATTN_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return (static_cast<std::uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
}

// A host tensor that owns its bytes.
struct HostTensor {
  DType dtype = DType::float32;
  std::vector<std::int64_t> shape;
  std::vector<unsigned char> bytes;

  HostTensor() = default;
  HostTensor(DType dt, std::vector<std::int64_t> s) : dtype(dt), shape(std::move(s)) {
    std::int64_t n = 1;
    for (auto x : shape) n *= x;
    bytes.assign(static_cast<std::size_t>(n) * dtype_size(dt), 0);
  }
  std::int64_t numel() const { return static_cast<std::int64_t>(bytes.size() / dtype_size(dtype)); }
  TensorView view() const {
    TensorView t;
    t.data = const_cast<unsigned char*>(bytes.data());
    t.dtype = dtype;
    t.ndim = static_cast<int>(shape.size());
    std::int64_t stride = 1;
    for (int d = t.ndim - 1; d >= 0; --d) {
      t.shape[d] = shape[d];
      t.stride[d] = stride;
      stride *= shape[d];
    }
    return t;
  }
  // All-ones bytes: NaN in every float format, so an unwritten element shows.
  void poison() { std::fill(bytes.begin(), bytes.end(), 0xFF); }
  double at(std::int64_t i) const {
    switch (dtype) {
      case DType::float32: return reinterpret_cast<const float*>(bytes.data())[i];
      case DType::bfloat16: return convert::bf16_to_float(reinterpret_cast<const std::uint16_t*>(bytes.data())[i]);
      case DType::float16: return convert::half_to_float(reinterpret_cast<const std::uint16_t*>(bytes.data())[i]);
      default: return 0;
    }
  }
  void set(std::int64_t i, double x) {
    const float f = static_cast<float>(x);
    switch (dtype) {
      case DType::float32: reinterpret_cast<float*>(bytes.data())[i] = f; break;
      case DType::bfloat16: reinterpret_cast<std::uint16_t*>(bytes.data())[i] = convert::float_to_bf16(f); break;
      case DType::float16: reinterpret_cast<std::uint16_t*>(bytes.data())[i] = convert::float_to_half(f); break;
      default: break;
    }
  }
  bool all_finite() const {
    for (std::int64_t i = 0; i < numel(); ++i)
      if (!std::isfinite(at(i))) return false;
    return true;
  }
};

inline HostTensor random_tensor(DType dt, std::vector<std::int64_t> shape, std::mt19937_64& rng, double sd = 1.0) {
  HostTensor t(dt, std::move(shape));
  std::normal_distribution<double> normal(0.0, sd);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, normal(rng));
  return t;
}

// ||a - b|| / ||b|| over all elements; NaN anywhere gives NaN (which fails every bound).
inline double rel_error(const HostTensor& a, const HostTensor& b) {
  double num = 0, den = 0;
  for (std::int64_t i = 0; i < b.numel(); ++i) {
    const double x = a.at(i), y = b.at(i);
    if (std::isnan(x) || std::isnan(y)) return NAN;
    num += (x - y) * (x - y);
    den += y * y;
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

// Q, K, V of a packed batch with fresh random values; queries and keys share a few directions
// so that the attention is not flat (flat attention hides ranking bugs).
struct Qkv {
  HostTensor q, k, v;
};

inline Qkv random_qkv(const Problem& p, std::mt19937_64& rng) {
  const std::int64_t n = p.total_tokens();
  Qkv x{random_tensor(p.dtype, {n, p.q_heads, p.head_dim}, rng),
        random_tensor(p.dtype, {n, p.kv_heads, p.head_dim}, rng),
        random_tensor(p.dtype, {n, p.kv_heads, p.head_dim}, rng)};
  // Sharpen: scale queries so that softmax is peaked enough to make rankings meaningful.
  for (std::int64_t i = 0; i < x.q.numel(); ++i) x.q.set(i, x.q.at(i) * 2.0);
  return x;
}

inline Problem make_problem(std::vector<std::int32_t> lengths, int hq, int hkv, int dim, DType dt) {
  Problem p;
  p.q_heads = hq;
  p.kv_heads = hkv;
  p.head_dim = dim;
  p.dtype = dt;
  p.cu_seqlens = {0};
  for (auto l : lengths) p.cu_seqlens.push_back(p.cu_seqlens.back() + l);
  return p;
}

// Runs f, expects an Error of `code` whose message contains every one of `parts`.
inline void expect_error(const std::function<void()>& f, ErrorCode code, std::initializer_list<const char*> parts) {
  try {
    f();
    ADD_FAILURE() << "no error raised; expected one mentioning " << *parts.begin();
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.code()), static_cast<int>(code)) << e.what();
    for (const char* p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << " lacks " << p;
  }
}

}  // namespace testutil
