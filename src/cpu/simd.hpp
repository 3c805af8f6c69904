// The fast CPU backend's vector kernels, one set per instruction-set level, chosen once at run
// time for the CPU the process runs on (dispatch.cpp): a build or wheel made on one machine runs
// at full width on any other. The kernels are written once against Highway (simd_kernels.cpp);
// the build compiles that file once per level with the level's -march (x86-64: baseline, v2 =
// SSE4, v3 = AVX2 + FMA, v4 = AVX-512; AArch64: NEON), each into its own namespace.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace proxyattn::detail::cpu {

// Rows of the matrices and vectors below are padded to a multiple of kPad floats (the widest
// vector), so that the kernels never need a scalar tail.
constexpr std::int64_t kPad = 16;
constexpr std::int64_t round_up(std::int64_t x, std::int64_t m) { return (x + m - 1) / m * m; }
// The row stride of a matrix of `cols` columns: padded to whole vectors, plus one vector so that
// the stride is never a multiple of 4 KB's divisors: rows 512 bytes apart would fall into a
// handful of the L1 cache's sets, and the products would miss on every row.
constexpr std::int64_t row_stride(std::int64_t cols) { return round_up(cols, kPad) + kPad; }

struct Kernels {
  const char* name;  // "avx512", "avx2", "sse4", "sse2" (x86-64), "neon" (AArch64), "generic"
  // C[M x N] (+)= A[M x K] * B[K x N], row-major fp32; N a multiple of kPad.
  void (*gemm)(const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc,
               std::int64_t M, std::int64_t N, std::int64_t K, bool accumulate);
  // The largest of init and x[0..n) (NaN never wins); n a multiple of kPad.
  float (*row_max)(const float* x, std::int64_t n, float init);
  // out[j] = 2^(x[j] - base) when out is not null; returns the sum of the 2^(x[j] - base). An
  // argument below -126 gives 0 (and -inf gives 0), NaN stays NaN; n a multiple of kPad.
  float (*exp2_sum)(const float* x, float* out, std::int64_t n, float base);
  // x[0..n) *= c; n a multiple of kPad.
  void (*scale)(float* x, std::int64_t n, float c);
};

// The kernels of the widest level this CPU runs (or the one forced by force_kernels).
const Kernels& kernels();
// Every level built in and runnable on this CPU, widest first.
std::vector<const Kernels*> available_kernels();
// Tests and benchmarks: run with the named level from now on (empty: the widest again); throws
// Error naming the level if it is not built in or this CPU cannot run it.
void force_kernels(const std::string& name);

}  // namespace proxyattn::detail::cpu
