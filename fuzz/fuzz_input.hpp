// Reads a fuzzer's bytes as small numbers; past the end every read gives 0, so that any input,
// however short, describes one case.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace proxyattn::fuzz {

class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  std::int8_t signed_byte() { return static_cast<std::int8_t>(byte()); }
  // A value in [0, n), n > 0.
  int below(int n) { return byte() % n; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

// n finite values in [-0.5, 0.5) from a fixed linear congruential generator, which `state` carries
// from call to call: the targets' tensors, whose structure (not their numbers) is under test.
inline std::vector<float> uniform_values(std::size_t n, std::uint32_t& state) {
  std::vector<float> x(n);
  for (float& f : x) f = static_cast<float>((state = state * 1664525u + 1013904223u) >> 8) / (1 << 24) - 0.5f;
  return x;
}

}  // namespace proxyattn::fuzz
