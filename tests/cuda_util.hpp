// Helpers of the CUDA backend tests: the skip without a device, host tensors mirrored on the
// device, and the LSE error.
#pragma once

#include <algorithm>
#include <cmath>

#include "test_util.hpp"

namespace testutil {

#define REQUIRE_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: the CUDA backend tests need one"

// A host tensor mirrored on the device.
struct DeviceCopy {
  Buffer buf;
  TensorView view;
  explicit DeviceCopy(const HostTensor& h) : buf(Device::cuda, std::max<std::size_t>(h.bytes.size(), 16)) {
    buf.copy_from_host(h.bytes.data(), h.bytes.size());
    view = h.view();
    view.data = buf.data();
    view.device = Device::cuda;
  }
  HostTensor fetch(const HostTensor& like) const {
    HostTensor h = like;
    buf.copy_to_host(h.bytes.data(), h.bytes.size());
    return h;
  }
  void poison() { buf.fill_bytes(0xFF); }
};

// A host mask copied to the device.
struct MaskOnGpu {
  Buffer off, idx;
  BlockMask view;
  explicit MaskOnGpu(const HostBlockMask& m)
      : off(Device::cuda, m.row_offsets.size() * 8), idx(Device::cuda, std::max<std::size_t>(m.col_indices.size(), 1) * 4) {
    off.copy_from_host(m.row_offsets.data(), m.row_offsets.size() * 8);
    idx.copy_from_host(m.col_indices.data(), m.col_indices.size() * 4);
    view = m.view();
    view.device = Device::cuda;
    view.row_offsets = static_cast<const std::int64_t*>(off.data());
    view.col_indices = static_cast<const std::int32_t*>(idx.data());
  }
};

inline Problem on_cuda(Problem p) {
  p.device = Device::cuda;
  return p;
}

// Relative error of the LSE over the finite entries, and whether the -inf entries agree.
inline double lse_error(const HostTensor& a, const HostTensor& b) {
  double num = 0, den = 0;
  for (std::int64_t i = 0; i < b.numel(); ++i) {
    const double x = a.at(i), y = b.at(i);
    if (std::isinf(y) && y < 0) {
      if (!(std::isinf(x) && x < 0)) return INFINITY;
      continue;
    }
    if (!std::isfinite(x)) return INFINITY;
    num += (x - y) * (x - y);
    den += y * y;
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

}  // namespace testutil
