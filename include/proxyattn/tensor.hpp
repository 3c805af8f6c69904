// A non-owning view of a strided tensor: the only way data enters the library.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace proxyattn {

enum class DType : std::uint8_t { float32, float16, bfloat16, int32, int64 };
enum class Device : std::uint8_t { cpu, cuda };

std::size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
const char* device_name(Device device);

struct TensorView {
  static constexpr int max_dims = 4;

  void* data = nullptr;
  DType dtype = DType::float32;
  Device device = Device::cpu;
  int device_index = 0;
  int ndim = 0;
  std::array<std::int64_t, max_dims> shape{};
  std::array<std::int64_t, max_dims> stride{};  // in elements, not bytes

  // A contiguous (row-major) view of `data`.
  static TensorView contiguous(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                               Device device = Device::cpu, int device_index = 0);

  bool defined() const { return ndim > 0; }  // a default-constructed view means "absent"
  std::int64_t numel() const;
  bool is_contiguous() const;
  std::string describe() const;  // "bfloat16[4096, 32, 128] on cuda:0", for error messages

  template <class T>
  T* as() const { return static_cast<T*>(data); }
};

}  // namespace proxyattn
