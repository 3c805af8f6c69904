// Helpers of the CUDA backend tests: the skip without a device, the kernel choices each test
// runs in turn, host tensors mirrored on the device, and the LSE error.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "cuda/kernels.hpp"
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

namespace kernels = proxyattn::detail::cuda;

// A kernel choice that the tests run in turn, in one process (kernels.hpp, KernelRequest).
struct KernelChoice {
  std::string label;
  kernels::KernelRequest request;
};

// Makes the plans built in its scope use the choice.
class UseKernels {
 public:
  explicit UseKernels(const KernelChoice& c) { kernels::set_kernel_request(c.request); }
  ~UseKernels() { kernels::set_kernel_request(std::nullopt); }
  UseKernels(const UseKernels&) = delete;
  UseKernels& operator=(const UseKernels&) = delete;
};

// Whether device 0 runs the sm90 kernels (an sm_90 GPU and a build with their sm_90a code).
inline bool sm90_runs() {
  static const bool runs = [] {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess || prop.major != 9 || prop.minor != 0) return false;
    UseKernels use({"sm90", kernels::parse_kernel_request("sm90")});
    try {
      Plan probe(Config{}, on_cuda(Problem::single(1, 1, 1, 64, DType::bfloat16)));
      return true;
    } catch (const Error&) {
      return false;
    }
  }();
  return runs;
}

// sm80 on every device; where sm90 runs also sm90 (stage 1 on wgmma even for small inputs), and
// sm90 with a persistent grid of 3 CTAs and stage-1 clusters of 3 CTAs (each CTA walks many work
// items, the path that long inputs take).
inline std::vector<KernelChoice> kernel_choices() {
  std::vector<KernelChoice> c;
  for (const char* text : {"sm80", "sm90", "sm90,ctas=3,split=3,pack=1"})
    if (text[2] == '8' || sm90_runs()) c.push_back({text, kernels::parse_kernel_request(text)});
  return c;
}

// The plan's kernels, checked against the choice: sm80 runs sm80 everywhere; sm90 runs the sm90
// estimator and attention, the latter on packed keys where pages are shorter than a key tile, the
// call has at least half as many queries as keys, or the choice packs every page size.
// "attention sm90 (packed pages), stage 1 sm90, stage 2 sm90".
inline std::string checked_kernels(const Plan& plan, const KernelChoice& c) {
  const kernels::Kernels& k = kernels::plan_kernels(plan);
  const kernels::Arch want = c.request.arch.value_or(kernels::Arch::sm80);
  const int page = plan.problem().page_size;
  if (c.request.arch) {
    EXPECT_EQ(k.stage1, want) << c.label;
    EXPECT_EQ(k.stage2, want) << c.label;
    EXPECT_EQ(k.attention, want) << c.label;
    const Problem& pr = plan.problem();
    const int key_tile = pr.head_dim == 256 ? 64 : 128;
    const bool pack = want == kernels::Arch::sm90 && page > 0 &&
                      (c.request.pack || page < key_tile || 2 * pr.total_tokens() >= pr.total_kv_tokens());
    EXPECT_EQ(k.pack_pages, pack) << c.label << ", pages of " << page;
  }
  return std::string("attention ") + kernels::arch_name(k.attention) + (k.pack_pages ? " (packed pages)" : "") +
         ", stage 1 " + kernels::arch_name(k.stage1) + ", stage 2 " + kernels::arch_name(k.stage2);
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
