// The seam between the API layer and the backends: each backend implements estimate and sparse
// attention (a null mask means dense causal attention). The API layer has validated everything
// before these are called.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/plan_impl.hpp"
#include "proxyattn/attention.hpp"

namespace proxyattn::detail {

// Where an estimate is written: host vectors or device workspace.
struct EstimateOut {
  std::int64_t* row_offsets;   // [mask_rows + 1]
  std::int32_t* col_indices;   // [mask_capacity]
  std::int32_t* budget_blocks; // [num_seqs * q_heads]
  std::int64_t* kept_blocks;   // [num_seqs * q_heads]
};

namespace reference {
void estimate(const Plan::Impl& plan, const TensorView& q, const TensorView& k, EstimateOut out);
void attention(const Plan::Impl& plan, const TensorView& q, const TensorView& k, const TensorView& v,
               const BlockMask* mask, const TensorView& out, const TensorView& lse);
}  // namespace reference

namespace cpu {
void estimate(const Plan::Impl& plan, const TensorView& q, const TensorView& k, EstimateOut out);
void attention(const Plan::Impl& plan, const TensorView& q, const TensorView& k, const TensorView& v,
               const BlockMask* mask, const TensorView& out, const TensorView& lse);
}  // namespace cpu

namespace cuda {
bool built();  // false in a build without the CUDA backend (the functions below then throw)
int device_count();
// Throws Error(unsupported) naming what the CUDA kernels cannot run for this plan.
void check_supported(const Plan::Impl& plan);
std::size_t workspace_bytes(const Plan::Impl& plan);
// Uploads the sequence tables into the workspace (asynchronous on stream).
void prepare(Plan::Impl& plan, void* stream);
Estimate estimate(Plan::Impl& plan, const TensorView& q, const TensorView& k, void* stream);
void attention(Plan::Impl& plan, const TensorView& q, const TensorView& k, const TensorView& v,
               const BlockMask* mask, const TensorView& out, const TensorView& lse, void* stream);
// Buffers and copies for Buffer.
void* allocate(std::size_t bytes, int device_index);
void release(void* ptr, int device_index) noexcept;
void copy(void* dst, const void* src, std::size_t bytes, bool to_device, int device_index);
void fill(void* dst, unsigned char value, std::size_t bytes, int device_index);
void synchronize(void* stream);
void copy_to_host_async(void* dst, const void* src, std::size_t bytes, void* stream);
bool capturing(void* stream);  // a CUDA graph is being captured on stream: no synchronisation allowed
}  // namespace cuda

}  // namespace proxyattn::detail
