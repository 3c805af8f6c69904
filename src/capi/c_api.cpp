// The C ABI: converts the plain C structs to the C++ API and turns every exception into a status
// code plus a per-thread message, because no exception may unwind through a C (or FFI) frame.
#include "proxyattn/c_api.h"

#include <new>
#include <type_traits>
#include <string>
#include <utility>

#include "proxyattn/attention.hpp"
#include "proxyattn/config.hpp"
#include "proxyattn/error.hpp"
#include "proxyattn/mask.hpp"
#include "proxyattn/plan.hpp"
#include "proxyattn/tensor.hpp"

using namespace proxyattn;

struct pa_plan {
  Plan plan;
  std::uint64_t workspace_bytes;
};

namespace {

thread_local std::string last_error;

[[noreturn]] void invalid(const std::string& message) {
  throw Error(ErrorCode::invalid_argument, message);
}

// Runs `body` and maps whatever it throws to a status code; the C boundary is here.
template <class Body>
int guarded(Body&& body) {
  try {
    body();
    return PA_OK;
  } catch (const Error& e) {
    last_error = e.what();
    switch (e.code()) {
      case ErrorCode::invalid_argument: return PA_INVALID_ARGUMENT;
      case ErrorCode::unsupported: return PA_UNSUPPORTED;
      case ErrorCode::runtime: return PA_RUNTIME_ERROR;
    }
    return PA_OTHER_ERROR;
  } catch (const std::bad_alloc&) {
    last_error = "proxyattn: out of memory";
    return PA_OTHER_ERROR;
  } catch (const std::exception& e) {
    last_error = std::string("proxyattn: ") + e.what();
    return PA_OTHER_ERROR;
  } catch (...) {
    last_error = "proxyattn: unknown exception";
    return PA_OTHER_ERROR;
  }
}

void require(const void* p, const char* name) {
  if (p == nullptr) invalid(std::string(name) + " is null");
}

DType to_dtype(std::int32_t code, const char* name) {
  if (code < PA_FLOAT32 || code > PA_INT64)
    invalid(std::string(name) + ": dtype code must be in [0, 4], got " + std::to_string(code));
  return static_cast<DType>(code);
}

Device to_device(std::int32_t code, const char* name) {
  if (code != PA_CPU && code != PA_CUDA)
    invalid(std::string(name) + ": device code must be 0 (cpu) or 1 (cuda), got " + std::to_string(code));
  return static_cast<Device>(code);
}

TensorView to_view(const pa_tensor& t, const char* name) {
  if (t.ndim < 0 || t.ndim > TensorView::max_dims)
    invalid(std::string(name) + ".ndim must be in [0, 4], got " + std::to_string(t.ndim));
  TensorView v;
  v.data = t.data;
  v.dtype = to_dtype(t.dtype, name);
  v.device = to_device(t.device, name);
  v.device_index = t.device_index;
  v.ndim = t.ndim;
  for (int i = 0; i < t.ndim; ++i) {
    v.shape[i] = t.shape[i];
    v.stride[i] = t.stride[i];
  }
  return v;
}

// A required tensor: null is an invalid argument naming it.
TensorView required(const pa_tensor* t, const char* name) {
  require(t, name);
  return to_view(*t, name);
}

// An optional tensor (lse): null means absent.
TensorView optional(const pa_tensor* t, const char* name) {
  return t == nullptr ? TensorView{} : to_view(*t, name);
}

// The tensors of an attention call, converted in argument order (a member initialiser list runs
// in declaration order, unlike function arguments), so that the first bad one is the one named.
struct Views {
  TensorView q, k, v, out, lse;
  Views(const pa_tensor* q_, const pa_tensor* k_, const pa_tensor* v_, const pa_tensor* out_,
        const pa_tensor* lse_)
      : q(required(q_, "q")), k(required(k_, "k")), v(required(v_, "v")), out(required(out_, "out")),
        lse(optional(lse_, "lse")) {}
};

Config to_config(const pa_config& c) {
  if (c.budget_mode != PA_ROW_RATIO && c.budget_mode != PA_LAST_ROW_COUNT && c.budget_mode != PA_ROW_MASS)
    invalid("config.budget_mode must be 0 (row_ratio), 1 (last_row_count) or 2 (row_mass), got " +
            std::to_string(c.budget_mode));
  if (c.backend < PA_BACKEND_AUTOMATIC || c.backend > PA_BACKEND_CUDA)
    invalid("config.backend must be in [0, 3], got " + std::to_string(c.backend));
  Config r;
  // Every field by name (PROXYATTN_CONFIG_FIELDS): a Config field without its pa_config field
  // does not compile. The C side holds flags and enums as int32.
#define PROXYATTN_FROM_C(T, name) \
  r.name = std::is_same_v<T, bool> ? static_cast<T>(c.name != 0) : static_cast<T>(c.name);
  PROXYATTN_CONFIG_FIELDS(PROXYATTN_FROM_C)
#undef PROXYATTN_FROM_C
  return r;
}

void fill_result(const Estimate& e, pa_estimate_result* out) {
  out->row_offsets = e.mask.row_offsets;
  out->col_indices = e.mask.col_indices;
  out->budget_blocks = e.budget_blocks;
  out->kept_blocks = e.kept_blocks;
  out->num_rows = e.mask.num_rows;
  out->device = static_cast<std::int32_t>(e.device);
}

}  // namespace

extern "C" {

void pa_config_default(pa_config* config) {
  if (config == nullptr) return;
  const Config d;
#define PROXYATTN_TO_C(T, name) config->name = static_cast<decltype(config->name)>(d.name);
  PROXYATTN_CONFIG_FIELDS(PROXYATTN_TO_C)
#undef PROXYATTN_TO_C
}

namespace {
int create_plan(const pa_config* config, int32_t q_heads, int32_t kv_heads, int32_t head_dim, int32_t dtype,
                int32_t device, int32_t device_index, const int32_t* cu_seqlens_host,
                const int32_t* cu_seqlens_k_host, int32_t num_seqs, int32_t page_size, void* stream, pa_plan** out) {
  return guarded([&] {
    require(out, "out");
    *out = nullptr;
    require(config, "config");
    require(cu_seqlens_host, "cu_seqlens_host");
    if (num_seqs < 1) invalid("num_seqs must be >= 1, got " + std::to_string(num_seqs));
    const Config c = to_config(*config);
    Problem p;
    p.q_heads = q_heads;
    p.kv_heads = kv_heads;
    p.head_dim = head_dim;
    p.dtype = to_dtype(dtype, "dtype");
    p.device = to_device(device, "device");
    p.device_index = device_index;
    p.cu_seqlens.assign(cu_seqlens_host, cu_seqlens_host + num_seqs + 1);
    if (cu_seqlens_k_host) p.cu_seqlens_k.assign(cu_seqlens_k_host, cu_seqlens_k_host + num_seqs + 1);
    p.page_size = page_size;
    // Sized first (it validates too), so that the getter below cannot fail.
    const std::uint64_t bytes = Plan::workspace_bytes(c, p);
    *out = new pa_plan{Plan(c, p, stream), bytes};
  });
}
}  // namespace

int pa_plan_create(const pa_config* config, int32_t q_heads, int32_t kv_heads, int32_t head_dim,
                   int32_t dtype, int32_t device, int32_t device_index, const int32_t* cu_seqlens_host,
                   int32_t num_seqs, void* stream, pa_plan** out) {
  return create_plan(config, q_heads, kv_heads, head_dim, dtype, device, device_index, cu_seqlens_host, nullptr,
                     num_seqs, 0, stream, out);
}

int pa_plan_create_kv(const pa_config* config, int32_t q_heads, int32_t kv_heads, int32_t head_dim,
                      int32_t dtype, int32_t device, int32_t device_index, const int32_t* cu_seqlens_host,
                      const int32_t* cu_seqlens_k_host, int32_t num_seqs, int32_t page_size, void* stream,
                      pa_plan** out) {
  if (!cu_seqlens_k_host)
    return guarded([&] {
      if (out) *out = nullptr;
      require(cu_seqlens_k_host, "cu_seqlens_k_host");
    });
  return create_plan(config, q_heads, kv_heads, head_dim, dtype, device, device_index, cu_seqlens_host,
                     cu_seqlens_k_host, num_seqs, page_size, stream, out);
}

void pa_plan_destroy(pa_plan* plan) { delete plan; }

int64_t pa_plan_num_blocks(const pa_plan* plan) { return plan ? plan->plan.num_blocks() : -1; }
int64_t pa_plan_mask_rows(const pa_plan* plan) { return plan ? plan->plan.mask_rows() : -1; }
int64_t pa_plan_mask_capacity(const pa_plan* plan) { return plan ? plan->plan.mask_capacity() : -1; }
uint64_t pa_plan_workspace_bytes(const pa_plan* plan) { return plan ? plan->workspace_bytes : 0; }

int pa_estimate(pa_plan* plan, const pa_tensor* q, const pa_tensor* k, void* stream, pa_estimate_result* out) {
  return guarded([&] {
    require(plan, "plan");
    require(out, "out");
    const TensorView qv = required(q, "q");
    const TensorView kv = required(k, "k");
    fill_result(estimate(plan->plan, qv, kv, stream), out);
  });
}

int pa_sparse_attention(pa_plan* plan, const pa_tensor* q, const pa_tensor* k, const pa_tensor* v,
                        const int64_t* row_offsets, const int32_t* col_indices, int64_t num_entries,
                        const pa_tensor* out, const pa_tensor* lse, void* stream) {
  return guarded([&] {
    require(plan, "plan");
    require(row_offsets, "row_offsets");
    // col_indices may be null for a mask that keeps nothing, so it is not required here; host
    // masks are checked entry by entry, device masks for their length only (their entries would
    // need a copy; the kernels skip key blocks out of range).
    if (num_entries < 0) invalid("num_entries must be >= 0, got " + std::to_string(num_entries));
    const Problem& pr = plan->plan.problem();
    BlockMask mask;
    mask.block_size = plan->plan.config().block_size;
    mask.num_heads = pr.q_heads;
    mask.num_rows = plan->plan.mask_rows();
    mask.device = pr.device;
    mask.device_index = pr.device_index;
    mask.row_offsets = row_offsets;
    mask.col_indices = col_indices;
    mask.num_entries = num_entries;
    const Views t(q, k, v, out, lse);
    sparse_attention(plan->plan, t.q, t.k, t.v, mask, t.out, t.lse, stream);
  });
}

int pa_attention(pa_plan* plan, const pa_tensor* q, const pa_tensor* k, const pa_tensor* v,
                 const pa_tensor* out, const pa_tensor* lse, void* stream, pa_estimate_result* est) {
  return guarded([&] {
    require(plan, "plan");
    const Views t(q, k, v, out, lse);
    const Estimate e = attention(plan->plan, t.q, t.k, t.v, t.out, t.lse, stream);
    if (est != nullptr) fill_result(e, est);
  });
}

int pa_dense_attention(pa_plan* plan, const pa_tensor* q, const pa_tensor* k, const pa_tensor* v,
                       const pa_tensor* out, const pa_tensor* lse, void* stream) {
  return guarded([&] {
    require(plan, "plan");
    const Views t(q, k, v, out, lse);
    dense_attention(plan->plan, t.q, t.k, t.v, t.out, t.lse, stream);
  });
}

int pa_attention_paged(pa_plan* plan, const pa_tensor* q, const pa_tensor* k_cache, const pa_tensor* v_cache,
                       const pa_tensor* block_table, const pa_tensor* out, const pa_tensor* lse, void* stream,
                       pa_estimate_result* est) {
  return guarded([&] {
    require(plan, "plan");
    const TensorView tq = required(q, "q");
    const KvCache kv{required(k_cache, "k_cache"), required(v_cache, "v_cache"), required(block_table, "block_table")};
    const TensorView to = required(out, "out"), tl = optional(lse, "lse");
    const Estimate e = attention(plan->plan, tq, kv, to, tl, stream);
    if (est != nullptr) fill_result(e, est);
  });
}

int pa_dense_attention_paged(pa_plan* plan, const pa_tensor* q, const pa_tensor* k_cache, const pa_tensor* v_cache,
                             const pa_tensor* block_table, const pa_tensor* out, const pa_tensor* lse, void* stream) {
  return guarded([&] {
    require(plan, "plan");
    const TensorView tq = required(q, "q");
    const KvCache kv{required(k_cache, "k_cache"), required(v_cache, "v_cache"), required(block_table, "block_table")};
    dense_attention(plan->plan, tq, kv, required(out, "out"), optional(lse, "lse"), stream);
  });
}

const char* pa_last_error(void) { return last_error.c_str(); }

}  // extern "C"
