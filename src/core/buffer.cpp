#include "proxyattn/buffer.hpp"

#include <cstdlib>
#include <cstring>
#include <new>

#include "core/backends.hpp"
#include "core/check.hpp"

namespace proxyattn {

bool cuda_available() { return detail::cuda::built() && detail::cuda::device_count() > 0; }

Buffer::Buffer(Device device, std::size_t bytes, int device_index)
    : bytes_(bytes), device_(device), device_index_(device_index) {
  if (bytes == 0) return;
  if (device == Device::cuda) {
    data_ = detail::cuda::allocate(bytes, device_index);
  } else {
    // 64-byte alignment: whole cache lines for the vectorised CPU loops.
    data_ = ::operator new(bytes, std::align_val_t{64}, std::nothrow);
    if (!data_) detail::fail(ErrorCode::runtime, "Buffer: cannot allocate ", bytes, " host bytes");
  }
}

Buffer::~Buffer() { release(); }

Buffer::Buffer(Buffer&& o) noexcept
    : data_(o.data_), bytes_(o.bytes_), device_(o.device_), device_index_(o.device_index_) {
  o.data_ = nullptr;
  o.bytes_ = 0;
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = o.data_;
    bytes_ = o.bytes_;
    device_ = o.device_;
    device_index_ = o.device_index_;
    o.data_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

void Buffer::release() noexcept {
  if (!data_) return;
  if (device_ == Device::cuda)
    detail::cuda::release(data_, device_index_);
  else
    ::operator delete(data_, std::align_val_t{64});
  data_ = nullptr;
}

static void check_range(const char* what, std::size_t offset, std::size_t bytes, std::size_t size) {
  if (offset > size || bytes > size - offset)
    detail::invalid(what, ": range [", offset, ", ", offset + bytes, ") is outside the buffer of ", size,
                    " bytes");
}

void Buffer::copy_from_host(const void* src, std::size_t bytes, std::size_t offset) {
  check_range("Buffer::copy_from_host", offset, bytes, bytes_);
  if (bytes == 0) return;
  char* dst = static_cast<char*>(data_) + offset;
  if (device_ == Device::cuda)
    detail::cuda::copy(dst, src, bytes, true, device_index_);
  else
    std::memcpy(dst, src, bytes);
}

void Buffer::copy_to_host(void* dst, std::size_t bytes, std::size_t offset) const {
  check_range("Buffer::copy_to_host", offset, bytes, bytes_);
  if (bytes == 0) return;
  const char* src = static_cast<const char*>(data_) + offset;
  if (device_ == Device::cuda)
    detail::cuda::copy(dst, src, bytes, false, device_index_);
  else
    std::memcpy(dst, src, bytes);
}

void Buffer::fill_bytes(unsigned char value) {
  if (bytes_ == 0) return;
  if (device_ == Device::cuda)
    detail::cuda::fill(data_, value, bytes_, device_index_);
  else
    std::memset(data_, value, bytes_);
}

void synchronize(Device device, void* stream) {
  if (device == Device::cuda) detail::cuda::synchronize(stream);
}

}  // namespace proxyattn
