// One instantiation per file, so that the six kernels compile in parallel.
#include "cuda/attention.cuh"

namespace proxyattn::detail::cuda {
template void launch_sparse_attention<__nv_bfloat16, 64>(AttentionParams, cudaStream_t);
}  // namespace proxyattn::detail::cuda
