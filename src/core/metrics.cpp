#include "proxyattn/metrics.hpp"

#include <cmath>

#include "core/check.hpp"
#include "core/tensor_access.hpp"

namespace proxyattn {

std::vector<double> attention_recall(const TensorView& lse_sparse, const TensorView& lse_dense) {
  for (const TensorView* t : {&lse_sparse, &lse_dense})
    if (t->ndim != 2 || t->dtype != DType::float32 || t->device != Device::cpu || !t->is_contiguous())
      detail::invalid("attention_recall: lse must be contiguous float32 [heads, total] on the host, got ",
                      t->describe());
  if (lse_sparse.shape != lse_dense.shape)
    detail::invalid("attention_recall: shapes differ: ", lse_sparse.describe(), " vs ", lse_dense.describe());
  const std::int64_t heads = lse_sparse.shape[0], total = lse_sparse.shape[1];
  std::vector<double> recall(heads, 0.0);
  const float* s = lse_sparse.as<float>();
  const float* d = lse_dense.as<float>();
  for (std::int64_t h = 0; h < heads; ++h) {
    double sum = 0;
    for (std::int64_t i = 0; i < total; ++i) {
      const double ls = s[h * total + i], ld = d[h * total + i];
      // A row with no kept key has lse -inf: recall 0. Clamp rounding above 1.
      sum += std::isinf(ls) && ls < 0 ? 0.0 : std::fmin(1.0, std::exp(ls - ld));
    }
    recall[h] = total ? sum / total : 1.0;
  }
  return recall;
}

namespace {
void check_pair(const char* fn, const TensorView& out, const TensorView& ref) {
  if (out.ndim != 3 || ref.ndim != 3 || out.shape != ref.shape || out.device != Device::cpu ||
      ref.device != Device::cpu)
    detail::invalid(fn, ": need two host tensors [total, heads, dim] of one shape, got ", out.describe(),
                    " and ", ref.describe());
}
}  // namespace

std::vector<double> relative_error(const TensorView& out, const TensorView& ref) {
  check_pair("relative_error", out, ref);
  const std::int64_t total = out.shape[0], heads = out.shape[1], dim = out.shape[2];
  std::vector<double> err(heads), num(heads, 0.0), den(heads, 0.0);
  for (std::int64_t t = 0; t < total; ++t)
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t d = 0; d < dim; ++d) {
        const double a = detail::load(out, t, h, d), b = detail::load(ref, t, h, d);
        num[h] += (a - b) * (a - b);
        den[h] += b * b;
      }
  for (std::int64_t h = 0; h < heads; ++h) err[h] = std::sqrt(num[h]) / std::fmax(std::sqrt(den[h]), 1e-300);
  return err;
}

double relative_error_total(const TensorView& out, const TensorView& ref) {
  check_pair("relative_error_total", out, ref);
  double num = 0, den = 0;
  for (std::int64_t t = 0; t < out.shape[0]; ++t)
    for (std::int64_t h = 0; h < out.shape[1]; ++h)
      for (std::int64_t d = 0; d < out.shape[2]; ++d) {
        const double a = detail::load(out, t, h, d), b = detail::load(ref, t, h, d);
        num += (a - b) * (a - b);
        den += b * b;
      }
  return std::sqrt(num) / std::fmax(std::sqrt(den), 1e-300);
}

}  // namespace proxyattn
