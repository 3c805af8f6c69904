#include "cpu/kernels.hpp"

namespace proxyattn::detail::cpu {
namespace {

// R rows by two vectors of C at a time: 2R accumulators stay in registers over the K loop.
template <int R, int V>
inline void tile(const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc,
                 std::int64_t K, bool accumulate) {
  vf acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = accumulate ? loadv(C + r * ldc + v * kLanes) : vf{};
  for (std::int64_t k = 0; k < K; ++k) {
    vf b[V];
    for (int v = 0; v < V; ++v) b[v] = loadv(B + k * ldb + v * kLanes);
    for (int r = 0; r < R; ++r) {
      const float a = A[r * lda + k];
      for (int v = 0; v < V; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) storev(C + r * ldc + v * kLanes, acc[r][v]);
}

template <int R>
inline void rows(const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc,
                 std::int64_t N, std::int64_t K, bool accumulate) {
  std::int64_t j = 0;
  for (; j + 2 * kLanes <= N; j += 2 * kLanes) tile<R, 2>(A, lda, B + j, ldb, C + j, ldc, K, accumulate);
  for (; j < N; j += kLanes) tile<R, 1>(A, lda, B + j, ldb, C + j, ldc, K, accumulate);
}

}  // namespace

void gemm(const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc,
          std::int64_t M, std::int64_t N, std::int64_t K, bool accumulate) {
  std::int64_t i = 0;
  for (; i + 4 <= M; i += 4) rows<4>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, N, K, accumulate);
  for (; i < M; ++i) rows<1>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, N, K, accumulate);
}

}  // namespace proxyattn::detail::cpu
