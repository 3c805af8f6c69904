// Host side of the sm90 kernel: the TMA tensor maps of a launch, encoded by the driver's
// cuTensorMapEncodeTiled, reached through the runtime's entry-point query so that the library
// does not link libcuda.
#include <cudaTypedefs.h>

#include "core/check.hpp"
#include "cuda/attention.hpp"

namespace proxyattn::detail::cuda::sm90 {
namespace {

using EncodeTiled = PFN_cuTensorMapEncodeTiled_v12000;

EncodeTiled encoder() {
  static const EncodeTiled fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return static_cast<EncodeTiled>(nullptr);
    }
    return reinterpret_cast<EncodeTiled>(f);
  }();
  return fn;
}

// A [tokens, heads, D] tensor (strides in elements, D contiguous) as boxes of box_tokens tokens x
// 1 head x 64 elements: one box fills one panel, box_tokens rows of 128 bytes, 128-byte swizzle
// (the layout the wgmma descriptors describe). Out-of-bounds rows read as zeros.
bool encode(CUtensorMap* map, const void* base, bool bf16, int head_dim, int heads, std::int64_t tokens,
            std::int64_t tok_stride, std::int64_t head_stride, int box_tokens) {
  const EncodeTiled fn = encoder();
  if (!fn) return false;
  if (heads == 1) head_stride = head_dim;  // unused then; any valid value
  if (tokens == 1) tok_stride = static_cast<std::int64_t>(heads) * head_stride;
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(head_dim), static_cast<cuuint64_t>(heads),
                              static_cast<cuuint64_t>(tokens)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(head_stride) * 2, static_cast<cuuint64_t>(tok_stride) * 2};
  const cuuint32_t box[3] = {64, 1, static_cast<cuuint32_t>(box_tokens)};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  return fn(map, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 3, const_cast<void*>(base),
            dims, strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace

void make_tile_maps(const AttentionParams& p, bool bf16, int head_dim, int kv_heads, TileMaps* maps) {
  if (p.total_kv_tokens >= (std::int64_t{1} << 31) - 1)
    fail(ErrorCode::unsupported, "k and v have ", p.total_kv_tokens, " token rows; the sm90 kernel takes fewer than 2^31 - 1");
  const int keys = key_tile(head_dim);  // a K/V tile per box (pages hold whole tiles, kernels.cpp)
  auto check = [](bool ok, const char* name, const void* base, std::int64_t tok_stride, std::int64_t head_stride) {
    if (!ok)
      fail(ErrorCode::unsupported, "the driver refused the TMA descriptor of ", name, " (address ", base,
           ", strides [", tok_stride, ", ", head_stride, "] elements)");
  };
  check(encode(&maps->q, p.q, bf16, head_dim, p.q_heads, p.total_tokens, p.q_tok, p.q_head, kTile), "q", p.q, p.q_tok,
        p.q_head);
  check(encode(&maps->k, p.k, bf16, head_dim, kv_heads, p.total_kv_tokens, p.k_tok, p.k_head, keys), "k", p.k, p.k_tok,
        p.k_head);
  check(encode(&maps->v, p.v, bf16, head_dim, kv_heads, p.total_kv_tokens, p.v_tok, p.v_head, keys), "v", p.v, p.v_tok,
        p.v_head);
}

}  // namespace proxyattn::detail::cuda::sm90
