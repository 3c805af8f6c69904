// Runs ProxyAttn on the CPU through the installed headers and library; exits 0 when the output
// is finite and the mask keeps the diagonal.
#include <proxyattn/proxyattn.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  const std::int64_t n = 300;
  const int hq = 4, hkv = 2, d = 32;
  std::vector<float> q(n * hq * d), k(n * hkv * d), v(n * hkv * d), out(n * hq * d);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = std::sin(0.37 * i);
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = std::cos(0.11 * i), v[i] = std::sin(0.05 * i);
  using namespace proxyattn;
  Config config;
  config.block_size = 64;
  config.min_budget_tokens = 64;
  Plan plan(config, Problem::single(n, hq, hkv, d, DType::float32));
  auto view = [](std::vector<float>& x, int heads) {
    return TensorView::contiguous(x.data(), DType::float32, {300, heads, 32});
  };
  const HostEstimate e = to_host(plan, attention(plan, view(q, hq), view(k, hkv), view(v, hkv), view(out, hq), TensorView{}));
  for (float x : out)
    if (!std::isfinite(x)) return 1;
  std::printf("density %.3f\n", e.density());
  return e.mask.col_indices.empty() ? 1 : 0;
}
