// Whether a kernel's sm_90a code is what runs on a device: the Hopper kernels are built only
// for sm_90a (wgmma, TMA, setmaxnreg), and a build for other targets must not launch them.
#pragma once

#include <cuda_runtime.h>

#include <atomic>

namespace proxyattn::detail::cuda::sm90 {

// `known` caches the answer per device index (0: not asked yet, 1: yes, -1: no), so that a launch
// inside a stream capture makes no query after the first call.
template <class Kernel>
bool sm90_code_runs(Kernel kernel, std::atomic<int> (&known)[64], int device) {
  if (device < 0 || device >= 64) return false;
  int k = known[device].load(std::memory_order_relaxed);
  if (k == 0) {
    cudaFuncAttributes attr{};
    const bool ok = cudaFuncGetAttributes(&attr, kernel) == cudaSuccess;
    if (!ok) cudaGetLastError();
    k = ok && attr.binaryVersion == 90 ? 1 : -1;
    known[device].store(k, std::memory_order_relaxed);
  }
  return k == 1;
}

}  // namespace proxyattn::detail::cuda::sm90
