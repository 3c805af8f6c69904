/* The C ABI of proxyattn, for FFI users (Python ctypes, Rust, Julia). Plain C: no C++ and no CUDA
 * headers. Every function that can fail returns a pa_status code and never lets an exception
 * escape; pa_last_error() then gives the message (per thread). The semantics are those of the
 * C++ API in proxyattn/attention.hpp and proxyattn/plan.hpp. */
#ifndef PROXYATTN_C_API_H
#define PROXYATTN_C_API_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define PA_API __declspec(dllexport)
#else
#define PA_API __attribute__((visibility("default")))
#endif

/* Return codes. */
enum {
  PA_OK = 0,
  PA_INVALID_ARGUMENT = 1,
  PA_UNSUPPORTED = 2,
  PA_RUNTIME_ERROR = 3,
  PA_OTHER_ERROR = 4
};

/* dtype codes, in the order of proxyattn::DType. */
enum { PA_FLOAT32 = 0, PA_FLOAT16 = 1, PA_BFLOAT16 = 2, PA_INT32 = 3, PA_INT64 = 4 };
/* device codes. */
enum { PA_CPU = 0, PA_CUDA = 1 };
/* budget_mode codes. */
enum { PA_ROW_RATIO = 0, PA_LAST_ROW_COUNT = 1, PA_ROW_MASS = 2 };
/* backend codes. */
enum { PA_BACKEND_AUTOMATIC = 0, PA_BACKEND_CPU_REFERENCE = 1, PA_BACKEND_CPU = 2, PA_BACKEND_CUDA = 3 };

/* A non-owning strided tensor view; strides are in elements. ndim == 0 means "absent". */
typedef struct {
  void* data;
  int32_t dtype;
  int32_t device;
  int32_t device_index;
  int32_t ndim;
  int64_t shape[4];
  int64_t stride[4];
} pa_tensor;

/* The ProxyAttn parameters (proxyattn::Config); pa_config_default fills the library defaults. */
typedef struct {
  int32_t block_size, stride, proxy_groups;
  double gamma;
  int64_t min_budget_tokens;
  int32_t keep_sink;   /* 0 or 1 */
  int32_t budget_mode; /* PA_ROW_RATIO, PA_LAST_ROW_COUNT or PA_ROW_MASS */
  double scale;        /* 0: 1/sqrt(head_dim) */
  int32_t backend;     /* PA_BACKEND_* */
  int32_t exact_last_block; /* 0 or 1 */
  int32_t head_columns;     /* 0 to 64 */
  double last_block_gamma;  /* 0 to 1: the last query block's cut, at least gamma */
} pa_config;

PA_API void pa_config_default(pa_config* config);

/* A plan: validates the problem once and owns the workspace (see proxyattn::Plan). */
typedef struct pa_plan pa_plan;

/* cu_seqlens_host: [num_seqs + 1] cumulative sequence offsets on the host. stream: a
 * cudaStream_t (may be NULL) for CUDA plans, ignored on the CPU. */
PA_API int pa_plan_create(const pa_config* config, int32_t q_heads, int32_t kv_heads, int32_t head_dim,
                          int32_t dtype, int32_t device, int32_t device_index,
                          const int32_t* cu_seqlens_host, int32_t num_seqs, void* stream, pa_plan** out);
/* Queries fewer than keys (a chunk of a prompt against the keys already cached):
 * cu_seqlens_k_host [num_seqs + 1] packs the keys and values, cu_seqlens_host the queries; each
 * sequence's queries are its last positions. page_size 0: K and V packed by cu_seqlens_k; > 0:
 * paged caches for pa_attention_paged and pa_dense_attention_paged, cu_seqlens_k giving each
 * sequence's key count (CUDA: a page_size that divides 128 or is a multiple of it). */
PA_API int pa_plan_create_kv(const pa_config* config, int32_t q_heads, int32_t kv_heads, int32_t head_dim,
                             int32_t dtype, int32_t device, int32_t device_index, const int32_t* cu_seqlens_host,
                             const int32_t* cu_seqlens_k_host, int32_t num_seqs, int32_t page_size, void* stream,
                             pa_plan** out);
PA_API void pa_plan_destroy(pa_plan* plan); /* NULL is fine */
/* The getters return -1 (or 0 for the workspace) for a NULL plan. */
PA_API int64_t pa_plan_num_blocks(const pa_plan* plan);
PA_API int64_t pa_plan_mask_rows(const pa_plan* plan);
PA_API int64_t pa_plan_mask_capacity(const pa_plan* plan);
PA_API uint64_t pa_plan_workspace_bytes(const pa_plan* plan);

/* The result of an estimate. The pointers live in the plan (on `device`) and stay valid until
 * the next estimate or attention call on the same plan. Mask row layout: row = global query
 * block * q_heads + head; column indices are key blocks local to the row's sequence. */
typedef struct {
  const int64_t* row_offsets;   /* [num_rows + 1] */
  const int32_t* col_indices;   /* [row_offsets[num_rows]] */
  const int32_t* budget_blocks; /* [num_seqs, q_heads] */
  const int64_t* kept_blocks;   /* [num_seqs, q_heads] */
  int64_t num_rows;
  int32_t device;
} pa_estimate_result;

/* Q, O [total_q, q_heads, head_dim]; K, V [total_kv, kv_heads, head_dim]; lse [q_heads, total_q]
 * float32 or NULL to skip it. */
PA_API int pa_estimate(pa_plan* plan, const pa_tensor* q, const pa_tensor* k, void* stream,
                       pa_estimate_result* out);
/* row_offsets / col_indices: a mask in the plan's row layout (pa_plan_mask_rows rows) with the
 * plan's block size, on the plan's device; num_entries: how many entries col_indices holds
 * (row_offsets[num_rows] must not exceed it; on CUDA that costs a read-back of one value). */
PA_API int pa_sparse_attention(pa_plan* plan, const pa_tensor* q, const pa_tensor* k, const pa_tensor* v,
                               const int64_t* row_offsets, const int32_t* col_indices, int64_t num_entries,
                               const pa_tensor* out, const pa_tensor* lse, void* stream);
/* Estimate + sparse attention; est (may be NULL) receives the estimate. */
PA_API int pa_attention(pa_plan* plan, const pa_tensor* q, const pa_tensor* k, const pa_tensor* v,
                        const pa_tensor* out, const pa_tensor* lse, void* stream, pa_estimate_result* est);
PA_API int pa_dense_attention(pa_plan* plan, const pa_tensor* q, const pa_tensor* k, const pa_tensor* v,
                              const pa_tensor* out, const pa_tensor* lse, void* stream);

/* Paged keys and values (a plan with page_size > 0): k_cache, v_cache [num_pages, page_size,
 * kv_heads, head_dim], block_table int32 [num_seqs, max_pages] (see proxyattn::KvCache). */
PA_API int pa_attention_paged(pa_plan* plan, const pa_tensor* q, const pa_tensor* k_cache, const pa_tensor* v_cache,
                              const pa_tensor* block_table, const pa_tensor* out, const pa_tensor* lse, void* stream,
                              pa_estimate_result* est);
PA_API int pa_dense_attention_paged(pa_plan* plan, const pa_tensor* q, const pa_tensor* k_cache,
                                    const pa_tensor* v_cache, const pa_tensor* block_table, const pa_tensor* out,
                                    const pa_tensor* lse, void* stream);

/* The message of the last failure on this thread, "" if none. Valid until the next call on this
 * thread. */
PA_API const char* pa_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* PROXYATTN_C_API_H */
