// libFuzzer target: the safetensors reader on arbitrary bytes. Every malformed file must end in a
// FormatError; a crash, a sanitizer report, a hang or an out-of-memory is a finding.
#include <cstddef>
#include <cstdint>

#include "safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace proxyattn::tool;
  try {
    for (StTensor& t : read_safetensors(data, size, "fuzz input")) {
      try {
        const proxyattn::TensorView v = t.view();
        if (v.numel() * static_cast<std::int64_t>(proxyattn::dtype_size(v.dtype)) !=
            static_cast<std::int64_t>(t.bytes.size()))
          __builtin_trap();  // a view that does not cover its bytes exactly
      } catch (const FormatError&) {  // a scalar cannot be viewed
      }
    }
  } catch (const FormatError&) {
  }
  return 0;
}
