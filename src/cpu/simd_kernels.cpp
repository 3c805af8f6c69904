// The vector kernels of simd.hpp, written once against Highway's portable operations. The build
// compiles this file once per instruction-set level (-march for the level, and
// PROXYATTN_SIMD_LEVEL naming it); Highway's static target follows the flags, so each copy uses
// its level's full vector width, and everything here has internal linkage but the one table.
#include <hwy/highway.h>

#include <cmath>

#include "cpu/simd.hpp"

#ifndef PROXYATTN_SIMD_LEVEL
#error "compile with -DPROXYATTN_SIMD_LEVEL=<name>"
#endif
// The build's flags must give Highway the level named (src/CMakeLists.txt).
#define PROXYATTN_IS_LEVEL_avx512 (HWY_STATIC_TARGET == HWY_AVX3 || HWY_STATIC_TARGET == HWY_AVX3_DL)
#define PROXYATTN_IS_LEVEL_avx2 (HWY_STATIC_TARGET == HWY_AVX2)
#define PROXYATTN_IS_LEVEL_sse4 (HWY_STATIC_TARGET == HWY_SSE4)
#define PROXYATTN_IS_LEVEL_sse2 1
#define PROXYATTN_IS_LEVEL_neon (HWY_STATIC_TARGET == HWY_NEON)
#define PROXYATTN_IS_LEVEL_generic 1
#define PROXYATTN_CAT2(a, b) a##b
#define PROXYATTN_CAT(a, b) PROXYATTN_CAT2(a, b)
#define PROXYATTN_STR2(a) #a
#define PROXYATTN_STR(a) PROXYATTN_STR2(a)
static_assert(PROXYATTN_CAT(PROXYATTN_IS_LEVEL_, PROXYATTN_SIMD_LEVEL), "Highway's static target is not this level");

namespace proxyattn::detail::cpu {
namespace {

namespace hn = hwy::HWY_NAMESPACE;
using D = hn::CappedTag<float, kPad>;  // at most 16 lanes: rows are padded to 16 floats
using V = hn::Vec<D>;

// Register tile of the matrix product: kRows rows of A by kVecs vectors of B. The accumulators,
// the B vectors and one broadcast must fit the register file: 32 registers on AVX-512 and NEON
// (8 x 3: 24 + 3 + 1), 16 on AVX2 and SSE (6 x 2: 12 + 2 + 1).
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL || HWY_TARGET == HWY_AVX3_ZEN4 || HWY_ARCH_ARM
constexpr int kRows = 8, kVecs = 3;
#else
constexpr int kRows = 6, kVecs = 2;
#endif

template <int R, int NV>
HWY_INLINE void tile(const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc,
                     std::int64_t K, bool accumulate) {
  const D d;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  V acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = accumulate ? hn::LoadU(d, C + r * ldc + v * N) : hn::Zero(d);
  for (std::int64_t k = 0; k < K; ++k) {
    V b[NV];
    for (int v = 0; v < NV; ++v) b[v] = hn::LoadU(d, B + k * ldb + v * N);
    for (int r = 0; r < R; ++r) {
      const V a = hn::Set(d, A[r * lda + k]);
      for (int v = 0; v < NV; ++v) acc[r][v] = hn::MulAdd(a, b[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) hn::StoreU(acc[r][v], d, C + r * ldc + v * N);
}

// One strip of kVecs (or fewer) vectors of columns, all rows: the strip of B (K x strip) stays
// in the L1 cache while the row tiles go by.
template <int NV>
HWY_INLINE void strip(const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc,
                      std::int64_t M, std::int64_t K, bool accumulate) {
  std::int64_t i = 0;
  for (; i + kRows <= M; i += kRows) tile<kRows, NV>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, K, accumulate);
  for (; i + 2 <= M; i += 2) tile<2, NV>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, K, accumulate);
  for (; i < M; ++i) tile<1, NV>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, K, accumulate);
}

void gemm(const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc,
          std::int64_t M, std::int64_t Ncols, std::int64_t K, bool accumulate) {
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(D()));
  std::int64_t j = 0;
  for (; j + kVecs * N <= Ncols; j += kVecs * N) strip<kVecs>(A, lda, B + j, ldb, C + j, ldc, M, K, accumulate);
  for (; j + 2 * N <= Ncols; j += 2 * N) strip<2>(A, lda, B + j, ldb, C + j, ldc, M, K, accumulate);
  for (; j < Ncols; j += N) strip<1>(A, lda, B + j, ldb, C + j, ldc, M, K, accumulate);
}

// 2^x: round to the nearest integer n by the 1.5 * 2^23 trick, a degree-6 polynomial on the
// remainder in [-0.5, 0.5] (relative error about 1e-7), n added to the exponent bits. Below -126
// the result is 0 (so -inf gives 0), NaN stays NaN.
HWY_INLINE V exp2(V x) {
  const D d;
  const hn::RebindToSigned<D> di;
  const auto nan = hn::IsNaN(x);
  const auto under = hn::Lt(x, hn::Set(d, -126.0f));
  const V c = hn::Min(hn::Max(x, hn::Set(d, -126.0f)), hn::Set(d, 127.0f));
  const V magic = hn::Set(d, 12582912.0f);
  const V rounded = hn::Add(c, magic);
  const auto n = hn::Sub(hn::BitCast(di, rounded), hn::Set(di, 0x4B400000));
  const V f = hn::Sub(c, hn::Sub(rounded, magic));
  V p = hn::Set(d, 1.5403530e-4f);
  p = hn::MulAdd(p, f, hn::Set(d, 1.3333558e-3f));
  p = hn::MulAdd(p, f, hn::Set(d, 9.6181291e-3f));
  p = hn::MulAdd(p, f, hn::Set(d, 5.5504109e-2f));
  p = hn::MulAdd(p, f, hn::Set(d, 2.4022651e-1f));
  p = hn::MulAdd(p, f, hn::Set(d, 6.9314718e-1f));
  p = hn::MulAdd(p, f, hn::Set(d, 1.0f));
  const V r = hn::BitCast(d, hn::Add(hn::BitCast(di, p), hn::ShiftLeft<23>(n)));
  return hn::IfThenElse(nan, x, hn::IfThenZeroElse(under, r));
}

float row_max(const float* x, std::int64_t n, float init) {
  const D d;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  V m = hn::Set(d, init);
  for (std::int64_t j = 0; j < n; j += N) {
    const V v = hn::LoadU(d, x + j);
    m = hn::IfThenElse(hn::Gt(v, m), v, m);  // a NaN compares false and never wins
  }
  float lanes[kPad];
  hn::StoreU(m, d, lanes);
  float best = init;
  for (std::int64_t l = 0; l < N; ++l) best = lanes[l] > best ? lanes[l] : best;
  return best;
}

float exp2_sum(const float* x, float* out, std::int64_t n, float base) {
  const D d;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  const V b = hn::Set(d, base);
  V sum = hn::Zero(d);
  for (std::int64_t j = 0; j < n; j += N) {
    const V e = exp2(hn::Sub(hn::LoadU(d, x + j), b));
    if (out) hn::StoreU(e, d, out + j);
    sum = hn::Add(sum, e);
  }
  return hn::GetLane(hn::SumOfLanes(d, sum));
}

void scale(float* x, std::int64_t n, float c) {
  const D d;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(d));
  const V s = hn::Set(d, c);
  for (std::int64_t j = 0; j < n; j += N) hn::StoreU(hn::Mul(hn::LoadU(d, x + j), s), d, x + j);
}

}  // namespace

extern const Kernels PROXYATTN_CAT(kernels_, PROXYATTN_SIMD_LEVEL);
const Kernels PROXYATTN_CAT(kernels_, PROXYATTN_SIMD_LEVEL) = {PROXYATTN_STR(PROXYATTN_SIMD_LEVEL), gemm, row_max,
                                                               exp2_sum, scale};

}  // namespace proxyattn::detail::cpu
