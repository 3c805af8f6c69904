// Device memory and copies for Buffer, and the device guard.
#include "core/backends.hpp"
#include "cuda/common.cuh"
#include "cuda/runtime.hpp"

namespace proxyattn::detail::cuda {

DeviceGuard::DeviceGuard(int device) {
  PROXYATTN_CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != device) PROXYATTN_CUDA_CHECK(cudaSetDevice(device));
  current_ = device;
}
DeviceGuard::~DeviceGuard() {
  if (previous_ != current_) cudaSetDevice(previous_);
}

bool built() { return true; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: not an error for the caller, just none
    return 0;
  }
  return n;
}

void* allocate(std::size_t bytes, int device_index) {
  if (device_index < 0 || device_index >= device_count())
    fail(ErrorCode::unsupported, "no CUDA device ", device_index, " (", device_count(), " visible)");
  DeviceGuard guard(device_index);
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) fail(ErrorCode::runtime, "cudaMalloc of ", bytes, " bytes on cuda:", device_index, ": ", cudaGetErrorString(e));
  return p;
}

void release(void* ptr, int device_index) noexcept {
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(device_index);
  cudaFree(ptr);
  cudaSetDevice(previous);
}

void copy(void* dst, const void* src, std::size_t bytes, bool to_device, int device_index) {
  DeviceGuard guard(device_index);
  PROXYATTN_CUDA_CHECK(cudaMemcpy(dst, src, bytes, to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost));
}

void fill(void* dst, unsigned char value, std::size_t bytes, int device_index) {
  DeviceGuard guard(device_index);
  PROXYATTN_CUDA_CHECK(cudaMemset(dst, value, bytes));
  PROXYATTN_CUDA_CHECK(cudaDeviceSynchronize());
}

void synchronize(void* stream) { PROXYATTN_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream))); }

void copy_to_host_async(void* dst, const void* src, std::size_t bytes, void* stream) {
  PROXYATTN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(stream)));
}

bool capturing(void* stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  PROXYATTN_CUDA_CHECK(cudaStreamIsCapturing(static_cast<cudaStream_t>(stream), &status));
  return status != cudaStreamCaptureStatusNone;
}

}  // namespace proxyattn::detail::cuda
