// Picks the CPU kernels (simd.hpp) once per process: the widest level that the build has and the
// CPU runs. The build defines PROXYATTN_SIMD_<LEVEL> for every level it compiled and
// PROXYATTN_SIMD_BASELINE, the level of the architecture's baseline, which always runs.
#include <atomic>

#include "core/check.hpp"
#include "cpu/simd.hpp"

namespace proxyattn::detail::cpu {

#define PROXYATTN_CAT2(a, b) a##b
#define PROXYATTN_CAT(a, b) PROXYATTN_CAT2(a, b)
#ifdef PROXYATTN_SIMD_AVX512
extern const Kernels kernels_avx512;
#endif
#ifdef PROXYATTN_SIMD_AVX2
extern const Kernels kernels_avx2;
#endif
#ifdef PROXYATTN_SIMD_SSE4
extern const Kernels kernels_sse4;
#endif
extern const Kernels PROXYATTN_CAT(kernels_, PROXYATTN_SIMD_BASELINE);

namespace {

bool runs(const Kernels& k) {
  const std::string name = k.name;
#if defined(__x86_64__)
  // All that -march=x86-64-vN lets the compiler use (by the levels' own names where the compiler
  // knows them: GCC 12, Clang 16), and AES and CLMUL, which Highway requires of SSE4 and above.
  __builtin_cpu_init();
  const bool aes = __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul");
#if (defined(__clang__) && __clang_major__ >= 16) || (!defined(__clang__) && __GNUC__ >= 12)
  const bool v2 = __builtin_cpu_supports("x86-64-v2"), v3 = __builtin_cpu_supports("x86-64-v3"),
             v4 = __builtin_cpu_supports("x86-64-v4");
#else
  const bool v2 = __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("popcnt");
  const bool v3 = v2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#endif
  if (name == "avx512") return aes && v4;
  if (name == "avx2") return aes && v3;
  if (name == "sse4") return aes && v2;
#endif
  return true;  // the baseline
}

std::vector<const Kernels*> built() {
  return {
#ifdef PROXYATTN_SIMD_AVX512
      &kernels_avx512,
#endif
#ifdef PROXYATTN_SIMD_AVX2
      &kernels_avx2,
#endif
#ifdef PROXYATTN_SIMD_SSE4
      &kernels_sse4,
#endif
      &PROXYATTN_CAT(kernels_, PROXYATTN_SIMD_BASELINE)};
}

std::atomic<const Kernels*> chosen{nullptr};

}  // namespace

std::vector<const Kernels*> available_kernels() {
  std::vector<const Kernels*> out;
  for (const Kernels* k : built())
    if (runs(*k)) out.push_back(k);
  return out;
}

const Kernels& kernels() {
  const Kernels* k = chosen.load(std::memory_order_acquire);
  if (k == nullptr) {
    k = available_kernels().front();
    chosen.store(k, std::memory_order_release);
  }
  return *k;
}

void force_kernels(const std::string& name) {
  if (name.empty()) {
    chosen.store(available_kernels().front(), std::memory_order_release);
    return;
  }
  std::string names;
  for (const Kernels* k : available_kernels()) {
    if (name == k->name) {
      chosen.store(k, std::memory_order_release);
      return;
    }
    names += std::string(names.empty() ? "" : ", ") + k->name;
  }
  invalid("CPU kernels '", name, "' are not built in or not supported by this CPU; available: ", names);
}

}  // namespace proxyattn::detail::cpu
