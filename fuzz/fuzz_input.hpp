// Reads a fuzzer's bytes as small numbers; past the end every read gives 0, so that any input,
// however short, describes one case.
#pragma once

#include <cstddef>
#include <cstdint>

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

}  // namespace proxyattn::fuzz
