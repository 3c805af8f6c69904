// An owning byte buffer on the host or a CUDA device, so that C++ users (and the tool) need no
// CUDA headers to feed the library.
#pragma once

#include <cstddef>

#include "proxyattn/tensor.hpp"

namespace proxyattn {

// True when this build has the CUDA backend and a CUDA device is visible.
bool cuda_available();

class Buffer {
 public:
  Buffer() = default;
  Buffer(Device device, std::size_t bytes, int device_index = 0);
  ~Buffer();
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  int device_index() const { return device_index_; }

  // Synchronous copies between this buffer and host memory; offsets and sizes in bytes.
  void copy_from_host(const void* src, std::size_t bytes, std::size_t offset = 0);
  void copy_to_host(void* dst, std::size_t bytes, std::size_t offset = 0) const;
  // Fills every byte with `value` (to poison outputs in tests).
  void fill_bytes(unsigned char value);

 private:
  void release() noexcept;
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  Device device_ = Device::cpu;
  int device_index_ = 0;
};

// Waits for all work on `stream` (a cudaStream_t); a no-op for the CPU.
void synchronize(Device device, void* stream = nullptr);

}  // namespace proxyattn
