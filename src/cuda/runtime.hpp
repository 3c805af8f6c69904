// Makes a device current for a scope and restores the caller's afterwards, so that the library
// never leaves the calling thread on another device.
#pragma once

namespace proxyattn::detail::cuda {

class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  int current_ = 0;
};

}  // namespace proxyattn::detail::cuda
