// The CUDA seam in a build without the CUDA backend: every entry says so.
#include "core/backends.hpp"
#include "core/check.hpp"

namespace proxyattn::detail::cuda {
namespace {
[[noreturn]] void absent() { fail(ErrorCode::unsupported, "this build has no CUDA backend"); }
}  // namespace

bool built() { return false; }
int device_count() { return 0; }
void check_supported(const Plan::Impl&) { absent(); }
std::size_t workspace_bytes(const Plan::Impl&) { absent(); }
void prepare(Plan::Impl&, void*) { absent(); }
Estimate estimate(Plan::Impl&, const TensorView&, const TensorView&, void*) { absent(); }
void attention(Plan::Impl&, const TensorView&, const TensorView&, const TensorView&, const BlockMask*,
               const TensorView&, const TensorView&, void*) {
  absent();
}
void* allocate(std::size_t, int) { absent(); }
void release(void*, int) noexcept {}
void copy(void*, const void*, std::size_t, bool, int) { absent(); }
void fill(void*, unsigned char, std::size_t, int) { absent(); }
void synchronize(void*) { absent(); }
void copy_to_host_async(void*, const void*, std::size_t, void*) { absent(); }
bool capturing(void*) { absent(); }

}  // namespace proxyattn::detail::cuda
