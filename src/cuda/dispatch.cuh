// From runtime values to kernel instantiations: the dtype x head dim pairs of the kernel table
// (generated from src/cuda/CMakeLists.txt into cuda/kernel_table.hpp).
#pragma once

#include "core/check.hpp"
#include "cuda/common.cuh"
#include "cuda/kernel_table.hpp"

namespace proxyattn::detail::cuda {

template <class T>
constexpr DType dtype_of() {
  return Elem<T>::is_bf16 ? DType::bfloat16 : DType::float16;
}

// Whether the table has kernels for this dtype and head dim.
inline bool in_kernel_table(DType dtype, int dim) {
  bool found = false;
#define PROXYATTN_FIND(T, D) found = found || (dtype == dtype_of<T>() && dim == D);
  PROXYATTN_CUDA_KERNELS(PROXYATTN_FIND)
#undef PROXYATTN_FIND
  return found;
}

// Calls f.template operator()<T, D>() for the table's entry of dtype and head dim, or fails
// naming what the table has.
template <class F>
void dispatch(DType dtype, int dim, F&& f) {
  bool done = false;
#define PROXYATTN_CASE(T, D)                          \
  if (!done && dtype == dtype_of<T>() && dim == D) { \
    f.template operator()<T, D>();                   \
    done = true;                                     \
  }
  PROXYATTN_CUDA_KERNELS(PROXYATTN_CASE)
#undef PROXYATTN_CASE
  if (!done)
    fail(ErrorCode::unsupported, "the CUDA backend takes dtype ", PROXYATTN_CUDA_DTYPES_TEXT, " and head_dim ",
         PROXYATTN_CUDA_HEAD_DIMS_TEXT, ", got ", dtype_name(dtype), " and ", dim);
}

}  // namespace proxyattn::detail::cuda
