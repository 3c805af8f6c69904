// Accuracy metrics of a sparse result against dense attention, computed on the host.
#pragma once

#include <vector>

#include "proxyattn/tensor.hpp"

namespace proxyattn {

// Attention recall per head: the share of the dense attention probability that falls inside the
// kept blocks, averaged over the rows. For row i, sum over kept keys of exp(s - lse_dense) equals
// exp(lse_sparse - lse_dense), so the two LSE outputs [q_heads, total] (float32, host) suffice.
std::vector<double> attention_recall(const TensorView& lse_sparse, const TensorView& lse_dense);

// Relative norm error per head, ||out - ref|| / ||ref||, of [total, heads, dim] host tensors.
std::vector<double> relative_error(const TensorView& out, const TensorView& ref);

// ||out - ref|| / ||ref|| over the whole tensor.
double relative_error_total(const TensorView& out, const TensorView& ref);

}  // namespace proxyattn
