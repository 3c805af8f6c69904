// One instantiation per file, so that the Hopper kernels compile in parallel.
#include "cuda/hopper/attention_sm90.cuh"

namespace proxyattn::detail::cuda::sm90 {
template bool kernel_available<__nv_bfloat16, 256>(int);
template void launch_sparse_attention_sm90<__nv_bfloat16, 256>(AttentionParams, const TileMaps&, bool, int, cudaStream_t);
}  // namespace proxyattn::detail::cuda::sm90
