// Whether a kernel's sm_90a code is what runs on a device: the sm90 kernels are built only
// for sm_90a (wgmma, TMA, setmaxnreg), and a build for other targets must not launch them.
#pragma once

#include <cuda_runtime.h>

#include <atomic>

namespace proxyattn::detail::cuda::sm90 {

// The answer is cached per device index (0: not asked yet, 1: yes, -1: no), one cache per
// kernel, so that a launch inside a stream capture makes no query after the first call.
template <auto kKernel>
bool sm90_code_runs(int device) {
  static std::atomic<int> known[64] = {};
  if (device < 0 || device >= 64) return false;
  int k = known[device].load(std::memory_order_relaxed);
  if (k == 0) {
    cudaFuncAttributes attr{};
    const bool ok = cudaFuncGetAttributes(&attr, kKernel) == cudaSuccess;
    if (!ok) cudaGetLastError();
    k = ok && attr.binaryVersion == 90 ? 1 : -1;
    known[device].store(k, std::memory_order_relaxed);
  }
  return k == 1;
}

}  // namespace proxyattn::detail::cuda::sm90
