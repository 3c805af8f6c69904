#include "proxyattn/tensor.hpp"

#include <sstream>

#include "core/check.hpp"

namespace proxyattn {

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::float32: return 4;
    case DType::float16: return 2;
    case DType::bfloat16: return 2;
    case DType::int32: return 4;
    case DType::int64: return 8;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::float32: return "float32";
    case DType::float16: return "float16";
    case DType::bfloat16: return "bfloat16";
    case DType::int32: return "int32";
    case DType::int64: return "int64";
  }
  return "?";
}

const char* device_name(Device device) { return device == Device::cuda ? "cuda" : "cpu"; }

TensorView TensorView::contiguous(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                                  Device device, int device_index) {
  if (shape.size() == 0 || shape.size() > max_dims)
    detail::invalid("TensorView::contiguous: rank must be 1..", max_dims, ", got ", shape.size());
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.device_index = device_index;
  t.ndim = static_cast<int>(shape.size());
  int i = 0;
  for (std::int64_t extent : shape) t.shape[i++] = extent;
  std::int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.stride[d] = stride;
    stride *= t.shape[d];
  }
  return t;
}

std::int64_t TensorView::numel() const {
  if (ndim == 0) return 0;
  std::int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[d];
  return n;
}

bool TensorView::is_contiguous() const {
  if (numel() == 0) return true;  // nothing to lay out
  std::int64_t expected = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    if (shape[d] != 1 && stride[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
}

std::string TensorView::describe() const {
  if (ndim == 0) return "an undefined tensor";
  std::ostringstream out;
  out << dtype_name(dtype) << "[";
  for (int d = 0; d < ndim; ++d) out << (d ? ", " : "") << shape[d];
  out << "] on " << device_name(device);
  if (device == Device::cuda) out << ":" << device_index;
  return out.str();
}

}  // namespace proxyattn
