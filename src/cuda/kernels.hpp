// Which kernels a CUDA plan runs. The choice is made once, when the plan is built, from the
// device, the problem and a request (the default: the fastest kernels the device and this build
// have), kept in the plan, and passed to every launch as values: no launch decides anything.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "proxyattn/plan.hpp"

namespace proxyattn::detail::cuda {

// sm80: mma.sync and cp.async, on any GPU of compute capability 8.0 or newer (sm80/).
// sm90: TMA, wgmma and clusters, on compute capability 9.0 only (sm_90a code, sm90/).
enum class Arch : std::uint8_t { sm80, sm90 };
const char* arch_name(Arch arch);

// What tests and benchmarks may ask for instead of the default choice.
struct KernelRequest {
  std::optional<Arch> arch;  // none: sm90 where it runs and pays, else sm80; sm90: wherever it
                             // runs (an error where the device or the build has none), sm80: never
  int ctas = 0;              // > 0: at most this many CTAs in the persistent sm90 attention grid
                             // (3 makes small tests walk many work items per CTA)
  int split = 0;             // 1..8: the sm90 stage 1's cluster size; 0: chosen from the problem
  bool pack = false;         // paged keys on sm90: pack them whatever the page size and the
                             // queries (kernels.cpp), to time packing against reading in place
};

// The request in force: the one set_kernel_request set, else the environment's PROXYATTN_KERNEL
// ("", "auto", "sm80" or "sm90", then optionally ",ctas=N", ",split=N" and ",pack=1"; anything else is an
// error naming the variable), read when a plan is built.
KernelRequest kernel_request();
// Tests: plans built after this call use `request` (none: the environment's again).
void set_kernel_request(std::optional<KernelRequest> request);
KernelRequest parse_kernel_request(const std::string& text);

struct Kernels {
  Arch attention = Arch::sm80;
  Arch stage1 = Arch::sm80;  // the estimator's stages 1 and 3
  Arch stage2 = Arch::sm80;
  int grid = 0;              // sm90 attention: CTAs of the persistent grid
  bool pack_pages = false;   // sm90 attention on paged keys: first copy the sequences' keys and
                             // values out of their pages into the workspace, then read them as
                             // contiguous keys (one TMA box per panel and tile, whatever the page)
  int stage1_rows = 0;       // sm90 stage 1: query blocks per group (one CTA cluster each)
  int stage1_split = 0;      // sm90 stage 1: CTAs per cluster
  std::size_t stage1_smem = 0;
};

struct Tables;  // layout.hpp

// The choice for a plan, made when it is built (kernels.cpp).
Kernels choose_kernels(const Plan::Impl& plan, const Tables& tables, const KernelRequest& request);
// The choice of a built CUDA plan, for tests and benchmarks (an error for other plans).
const Kernels& plan_kernels(const Plan& plan);

}  // namespace proxyattn::detail::cuda
