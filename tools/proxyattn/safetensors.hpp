// Reading and writing safetensors files (https://github.com/huggingface/safetensors) for the tool.
//
// Layout: an 8-byte little-endian header length H, H bytes of UTF-8 JSON mapping each tensor name
// to {"dtype", "shape", "data_offsets": [begin, end]} (plus an optional "__metadata__" object of
// strings), then the data section; offsets are relative to the start of the data section.
// Files are untrusted input: every malformed file is reported as a FormatError.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "proxyattn/tensor.hpp"

namespace proxyattn::tool {

// One tensor of a file; owns its data.
struct StTensor {
  std::string name;
  proxyattn::DType dtype = proxyattn::DType::float32;  // F32, F16, BF16, I32, I64 in the file
  std::vector<std::int64_t> shape;                     // rank 0..4; rank 0 is a scalar
  std::vector<std::uint8_t> bytes;                     // little-endian, numel * dtype_size bytes

  // A contiguous host view over `bytes`, valid while this object lives and `bytes` is not resized.
  // Throws FormatError for a scalar (the library needs rank 1..4) or if `bytes` has the wrong size.
  proxyattn::TensorView view();
};

class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Reads every tensor of the file, ordered by data offset (then name). Metadata is checked but not
// returned. Throws FormatError naming the file and what is wrong with it.
std::vector<StTensor> read_safetensors(const std::string& path);
// The same from `size` bytes in memory; `name` stands for the path in messages.
std::vector<StTensor> read_safetensors(const void* bytes, std::size_t size, const std::string& name);

// The tensor called `name`, or nullptr.
const StTensor* find(const std::vector<StTensor>& tensors, const std::string& name);

// Writes `tensors` (data in the given order) and `metadata`. Throws FormatError if a tensor's bytes
// do not match its shape and dtype, a name is repeated or reserved, or the file cannot be written.
void write_safetensors(const std::string& path, const std::vector<StTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace proxyattn::tool
