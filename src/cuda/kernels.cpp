// The kernel choice of a CUDA plan (kernels.hpp): the only place that reads the environment, and
// the only place that decides which kernels run.
#include "cuda/kernels.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/check.hpp"
#include "cuda/attention.hpp"
#include "cuda/dispatch.cuh"
#include "cuda/estimate.cuh"
#include "cuda/layout.hpp"

namespace proxyattn::detail::cuda {
namespace {

std::optional<KernelRequest>& test_request() {
  static std::optional<KernelRequest> request;
  return request;
}

[[noreturn]] void bad_request(const std::string& text, const char* why) {
  fail(ErrorCode::invalid_argument, "PROXYATTN_KERNEL must be auto, sm80 or sm90, then optionally ,ctas=N (N >= 1) "
       "and ,split=N (1 to 8) and ,pack=1; got '", text, "' (", why, ")");
}

int parse_count(const std::string& text, const std::string& value, int lo, int hi) {
  char* end = nullptr;
  const long v = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || v < lo || v > hi) bad_request(text, "a count out of range");
  return static_cast<int>(v);
}

}  // namespace

const char* arch_name(Arch arch) { return arch == Arch::sm90 ? "sm90" : "sm80"; }

KernelRequest parse_kernel_request(const std::string& text) {
  KernelRequest r;
  std::size_t pos = 0;
  bool first = true;
  while (pos <= text.size()) {
    const std::size_t comma = std::min(text.find(',', pos), text.size());
    const std::string part = text.substr(pos, comma - pos);
    pos = comma + 1;
    if (first) {
      first = false;
      if (part == "sm80") r.arch = Arch::sm80;
      else if (part == "sm90") r.arch = Arch::sm90;
      else if (part != "auto" && !part.empty()) bad_request(text, "an unknown kernel");
    } else if (part.rfind("ctas=", 0) == 0) {
      r.ctas = parse_count(text, part.substr(5), 1, 1 << 20);
    } else if (part == "pack=1") {
      r.pack = true;
    } else if (part.rfind("split=", 0) == 0) {
      r.split = parse_count(text, part.substr(6), 1, 8);
    } else {
      bad_request(text, "an unknown option");
    }
  }
  return r;
}

KernelRequest kernel_request() {
  if (test_request()) return *test_request();
  const char* s = std::getenv("PROXYATTN_KERNEL");
  return s ? parse_kernel_request(s) : KernelRequest{};
}

void set_kernel_request(std::optional<KernelRequest> request) { test_request() = request; }

// sm90 wherever the device is an sm_90 GPU and this build's sm_90a code runs on it (asked of
// each kernel: a build without sm_90a code has none), unless the request says sm80. The
// attention also needs a problem its copies take (sm90_takes), stages 1 + 3 a shape that fits
// (and, unless sm90 was asked for, that fills half the device: stage1_sm90_shape).
Kernels choose_kernels(const Plan::Impl& p, const Tables& t, const KernelRequest& r) {
  const Problem& pr = p.problem;
  int major = 0, minor = 0, sms = 0;
  PROXYATTN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, pr.device_index));
  PROXYATTN_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, pr.device_index));
  PROXYATTN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, pr.device_index));
  bool code = false;
  dispatch(pr.dtype, pr.head_dim, [&]<class T, int D>() { code = sm90::kernel_available<T, D>(pr.device_index); });
  const bool device = major == 9 && minor == 0 && code;
  if (r.arch == Arch::sm90 && !device)
    fail(ErrorCode::unsupported, "the sm90 kernels were asked for (PROXYATTN_KERNEL), but cuda:", pr.device_index,
         " is compute capability ", major, ".", minor, code ? "" : " or this build has no sm_90a code for it");
  const bool sm90 = device && r.arch != Arch::sm80;
  Kernels k;
  // Paged keys are packed into the workspace (Kernels::pack_pages) where pages are shorter than a
  // key tile, or where the call has at least half as many queries as keys, so that the copy (each
  // key read and written once) is small against the attention's reads. Dense attention at 128K
  // through pages read in place took 1.26-1.33x of contiguous keys for pages of 16 (one TMA box per
  // page and panel), 1.03-1.07x for 128 and 256; packed, 0.98-1.03x for all three
  // (bench/results/2026-12-03_h200_kvcache). A short chunk against a long cache reads its pages in
  // place: packing would copy every key for few queries.
  const int key_tile = sm90::key_tile(pr.head_dim);
  const bool pack = pr.paged() && (r.pack || pr.page_size < key_tile || 2 * pr.total_tokens() >= pr.total_kv_tokens());
  if (sm90 && sm90::sm90_takes(pr.total_tokens(), pr.paged() && !pack ? 0 : pr.total_kv_tokens())) {
    k.attention = Arch::sm90;
    k.grid = r.ctas > 0 ? std::min(sms, r.ctas) : sms;
    k.pack_pages = pack;
  }
  const EstimateShape shape{t.sort_size, p.config.stride, p.config.proxy_groups, p.num_blocks};
  dispatch(pr.dtype, pr.head_dim, [&]<class T, int D>() {
    choose_estimate_kernels<T, D>(shape, pr.device_index, sms, sm90, r.arch == Arch::sm90, r.split, &k);
  });
  return k;
}

}  // namespace proxyattn::detail::cuda
