// The API layer: validates every argument against the plan, then hands over to the backend.
#include "proxyattn/attention.hpp"

#include <cstring>

#include "core/backends.hpp"
#include "core/check.hpp"
#include "core/plan_impl.hpp"

namespace proxyattn {
namespace {

using detail::invalid;

void check_same_device(const char* name, const TensorView& t, const Plan::Impl& p) {
  const bool same = t.device == p.problem.device &&
                    (t.device == Device::cpu || t.device_index == p.problem.device_index);
  if (!same)
    invalid(name, " is on ", device_name(t.device), ":", t.device_index, " but the plan is for ",
            device_name(p.problem.device), ":", p.problem.device_index);
}

void check_heads_tensor(const char* name, const TensorView& t, const Plan::Impl& p, int heads, std::int64_t tokens) {
  const Problem& pr = p.problem;
  if (!t.defined()) invalid(name, " is undefined");
  if (t.ndim != 3)
    invalid(name, " must have 3 dimensions [total_tokens, heads, head_dim], got ", t.describe());
  if (t.dtype != pr.dtype)
    invalid(name, " must be ", dtype_name(pr.dtype), " as planned, got ", t.describe());
  check_same_device(name, t, p);
  if (t.shape[0] != tokens || t.shape[1] != heads || t.shape[2] != pr.head_dim)
    invalid(name, " must have shape [", tokens, ", ", heads, ", ", pr.head_dim, "] as planned, got ", t.describe());
  if (t.numel() == 0) return;  // no element is read, so the strides of an empty tensor do not matter
  if (t.shape[2] > 1 && t.stride[2] != 1)
    invalid(name, " must be contiguous in its last dimension, got stride ", t.stride[2]);
  if (t.stride[0] < 0 || t.stride[1] < 0)
    invalid(name, " must have non-negative strides, got [", t.stride[0], ", ", t.stride[1], ", ",
            t.stride[2], "]");
  if (t.data == nullptr && t.numel() > 0) invalid(name, " has a null data pointer");
}

void check_lse(const TensorView& lse, const Plan::Impl& p) {
  if (!lse.defined()) return;
  const Problem& pr = p.problem;
  if (lse.dtype != DType::float32) invalid("lse must be float32, got ", lse.describe());
  check_same_device("lse", lse, p);
  if (lse.ndim != 2 || lse.shape[0] != pr.q_heads || lse.shape[1] != pr.total_tokens())
    invalid("lse must have shape [", pr.q_heads, ", ", pr.total_tokens(), "], got ", lse.describe());
  if (!lse.is_contiguous()) invalid("lse must be contiguous");
  if (lse.data == nullptr && lse.numel() > 0) invalid("lse has a null data pointer");
}

void check_inputs(const Plan::Impl& p, const TensorView& q, const TensorView& k, const TensorView* v,
                  const TensorView* out) {
  if (p.problem.paged())
    invalid("this plan's keys and values are paged (problem.page_size ", p.problem.page_size,
            "): pass them as a KvCache");
  const std::int64_t nq = p.problem.total_tokens(), nk = p.problem.total_kv_tokens();
  check_heads_tensor("q", q, p, p.problem.q_heads, nq);
  check_heads_tensor("k", k, p, p.problem.kv_heads, nk);
  if (v) check_heads_tensor("v", *v, p, p.problem.kv_heads, nk);
  if (out) check_heads_tensor("out", *out, p, p.problem.q_heads, nq);
}

// A paged cache [num_pages, page_size, kv_heads, head_dim] as the token view
// [num_pages * page_size, kv_heads, head_dim] that the backends read through Plan::Impl::kv_token.
TensorView token_view(const char* name, const TensorView& t, const Plan::Impl& p) {
  const Problem& pr = p.problem;
  if (!t.defined()) invalid(name, " is undefined");
  if (t.ndim != 4)
    invalid(name, " must have 4 dimensions [num_pages, page_size, kv_heads, head_dim], got ", t.describe());
  if (t.dtype != pr.dtype) invalid(name, " must be ", dtype_name(pr.dtype), " as planned, got ", t.describe());
  check_same_device(name, t, p);
  if (t.shape[1] != pr.page_size || t.shape[2] != pr.kv_heads || t.shape[3] != pr.head_dim)
    invalid(name, " must have shape [num_pages, ", pr.page_size, ", ", pr.kv_heads, ", ", pr.head_dim,
            "] as planned, got ", t.describe());
  if (t.numel() > 0) {
    if (t.shape[3] > 1 && t.stride[3] != 1)
      invalid(name, " must be contiguous in its last dimension, got stride ", t.stride[3]);
    if (t.stride[1] < 0 || t.stride[2] < 0)
      invalid(name, " must have non-negative strides, got ", t.stride[1], " and ", t.stride[2]);
    if (t.shape[0] > 1 && t.stride[0] != t.shape[1] * t.stride[1])
      invalid(name, ": each page must be one block of memory (stride[0] == page_size * stride[1] = ",
              t.shape[1] * t.stride[1], "), got stride[0] = ", t.stride[0]);
    if (t.data == nullptr) invalid(name, " has a null data pointer");
  }
  TensorView v = t;
  v.ndim = 3;
  v.shape = {t.shape[0] * t.shape[1], t.shape[2], t.shape[3], 0};
  v.stride = {t.stride[1], t.stride[2], t.stride[3], 0};
  return v;
}

// The block table, whole, before any key is read through it.
void check_table(const TensorView& t, const Plan::Impl& p, std::int64_t num_pages) {
  const Problem& pr = p.problem;
  const int n = pr.num_seqs();
  if (!t.defined()) invalid("kv.block_table is undefined");
  if (t.dtype != DType::int32) invalid("kv.block_table must be int32, got ", t.describe());
  check_same_device("kv.block_table", t, p);
  if (t.ndim != 2 || t.shape[0] != n) invalid("kv.block_table must have shape [", n, ", max_pages], got ", t.describe());
  if (t.shape[1] > 1 && t.stride[1] != 1)
    invalid("kv.block_table must be contiguous in its last dimension, got stride ", t.stride[1]);
  for (int s = 0; s < n; ++s) {
    const std::int64_t need = (p.kv_len(s) + pr.page_size - 1) / pr.page_size;
    if (need > t.shape[1])
      invalid("kv.block_table has ", t.shape[1], " pages per sequence, but sequence ", s, " has ", p.kv_len(s),
              " keys: ", need, " pages of ", pr.page_size);
    if (need > 0 && t.data == nullptr) invalid("kv.block_table has a null data pointer");
    // A device table's entries are not read here (that would synchronise every call); the CUDA
    // kernels read a page outside the cache as zeros instead of reading outside it.
    if (t.device == Device::cuda) continue;
    for (std::int64_t i = 0; i < need; ++i) {
      const std::int32_t page = t.as<const std::int32_t>()[s * t.stride[0] + i];
      if (page < 0 || page >= num_pages)
        invalid("kv.block_table[", s, "][", i, "] = ", page, " is not a page of the cache (", num_pages, " pages)");
    }
  }
}

// A call on a paged plan: the checked token views, and the block table set on the plan for the
// duration of the call.
struct PagedCall {
  Plan::Impl& p;
  TensorView k, v;
  PagedCall(Plan::Impl& plan, const TensorView& q, const KvCache& kv, bool with_v, const TensorView* out)
      : p(plan) {
    if (!p.problem.paged())
      invalid("this plan's keys and values are not paged (problem.page_size 0): pass them as tensors");
    check_heads_tensor("q", q, p, p.problem.q_heads, p.problem.total_tokens());
    if (out) check_heads_tensor("out", *out, p, p.problem.q_heads, p.problem.total_tokens());
    k = token_view("kv.k", kv.k, p);
    if (with_v) {
      v = token_view("kv.v", kv.v, p);
      if (kv.v.shape[0] != kv.k.shape[0])
        invalid("kv.v must have as many pages as kv.k (", kv.k.shape[0], "), got ", kv.v.describe());
    }
    check_table(kv.block_table, p, kv.k.shape[0]);
    p.block_table = kv.block_table.as<const std::int32_t>();
    p.table_stride = kv.block_table.stride[0];
  }
  ~PagedCall() {
    p.block_table = nullptr;
    p.table_stride = 0;
  }
  PagedCall(const PagedCall&) = delete;
  PagedCall& operator=(const PagedCall&) = delete;
};

// row_offsets[num_rows] against the entries col_indices holds, before anything reads them.
void check_entries(const BlockMask& m, void* stream) {
  std::int64_t counted = 0;
  if (m.device == Device::cuda) {
    if (detail::cuda::capturing(stream)) return;  // the caller vouches while a graph is captured
    detail::cuda::copy_to_host_async(&counted, m.row_offsets + m.num_rows, sizeof counted, stream);
    detail::cuda::synchronize(stream);
  } else {
    counted = m.row_offsets[m.num_rows];
  }
  if (counted > m.num_entries)
    invalid("mask.row_offsets[", m.num_rows, "] = ", counted, " counts more key blocks than col_indices holds (",
            m.num_entries, ")");
}

// Header checks for every backend; the host backends also check every index, which the CUDA
// backend cannot do without a synchronisation (its kernels skip out-of-range indices instead).
void check_mask(const BlockMask& m, const Plan::Impl& p, void* stream) {
  if (m.block_size != p.config.block_size)
    invalid("mask.block_size (", m.block_size, ") must equal config.block_size (", p.config.block_size, ")");
  if (m.num_heads != p.problem.q_heads)
    invalid("mask.num_heads (", m.num_heads, ") must equal problem.q_heads (", p.problem.q_heads, ")");
  if (m.num_rows != p.mask_rows)
    invalid("mask.num_rows (", m.num_rows, ") must be num_blocks * q_heads = ", p.mask_rows);
  if (m.device != p.problem.device || (m.device == Device::cuda && m.device_index != p.problem.device_index))
    invalid("mask is on ", device_name(m.device), ":", m.device_index, " but the plan is for ",
            device_name(p.problem.device), ":", p.problem.device_index);
  if (m.row_offsets == nullptr) invalid("mask.row_offsets is null");
  if (m.num_entries >= 0) check_entries(m, stream);
  if (m.device == Device::cuda) return;
  if (m.row_offsets[0] != 0) invalid("mask.row_offsets[0] must be 0, got ", m.row_offsets[0]);
  if (m.row_offsets[m.num_rows] > 0 && m.col_indices == nullptr) invalid("mask.col_indices is null");
  // Offsets first, so that no row is read past the entries that the last offset counts.
  for (std::int64_t r = 0; r < m.num_rows; ++r)
    if (m.row_offsets[r + 1] < m.row_offsets[r])
      invalid("mask.row_offsets must be non-decreasing, row ", r, ": ", m.row_offsets[r], " > ", m.row_offsets[r + 1]);
  for (int s = 0; s < p.problem.num_seqs(); ++s) {
    for (std::int64_t b = p.block_offset[s]; b < p.block_offset[s + 1]; ++b) {
      const std::int64_t m_local = p.first_block(s) + (b - p.block_offset[s]);  // the block's own index
      for (int h = 0; h < m.num_heads; ++h) {
        const std::int64_t r = b * m.num_heads + h;
        const std::int64_t lo = m.row_offsets[r], hi = m.row_offsets[r + 1];
        for (std::int64_t i = lo; i < hi; ++i) {
          const std::int32_t c = m.col_indices[i];
          if (c < 0 || c > m_local)
            invalid("mask row ", r, " (sequence ", s, ", query block ", m_local, ", head ", h,
                    ") keeps key block ", c, ", outside the causal range [0, ", m_local, "]");
          if (i > lo && c <= m.col_indices[i - 1])
            invalid("mask row ", r, " must list key blocks in ascending order, got ", m.col_indices[i - 1],
                    " then ", c);
        }
      }
    }
  }
}

Estimate host_estimate(const Plan::Impl& p) {
  Estimate e;
  e.device = Device::cpu;
  e.mask.block_size = p.config.block_size;
  e.mask.num_heads = p.problem.q_heads;
  e.mask.num_rows = p.mask_rows;
  e.mask.device = Device::cpu;
  e.mask.row_offsets = p.row_offsets.data();
  e.mask.col_indices = p.col_indices.data();
  e.budget_blocks = p.budget_blocks.data();
  e.kept_blocks = p.kept_blocks.data();
  return e;
}

void run_attention(Plan::Impl& p, const TensorView& q, const TensorView& k, const TensorView& v,
                   const BlockMask* mask, const TensorView& out, const TensorView& lse, void* stream) {
  switch (p.backend) {
    case Backend::cuda: detail::cuda::attention(p, q, k, v, mask, out, lse, stream); return;
    case Backend::cpu_reference: detail::reference::attention(p, q, k, v, mask, out, lse); return;
    default: detail::cpu::attention(p, q, k, v, mask, out, lse); return;
  }
}

Estimate run_estimate(Plan::Impl& p, const TensorView& q, const TensorView& k, void* stream) {
  if (p.backend == Backend::cuda) return detail::cuda::estimate(p, q, k, stream);
  detail::EstimateOut out{p.row_offsets.data(), p.col_indices.data(), p.budget_blocks.data(),
                          p.kept_blocks.data()};
  if (p.backend == Backend::cpu_reference)
    detail::reference::estimate(p, q, k, out);
  else
    detail::cpu::estimate(p, q, k, out);
  return host_estimate(p);
}

}  // namespace

Estimate estimate(Plan& plan, const TensorView& q, const TensorView& k, void* stream) {
  Plan::Impl& p = plan.impl();
  check_inputs(p, q, k, nullptr, nullptr);
  return run_estimate(p, q, k, stream);
}

void sparse_attention(Plan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                      const BlockMask& mask, const TensorView& out, const TensorView& lse, void* stream) {
  Plan::Impl& p = plan.impl();
  check_inputs(p, q, k, &v, &out);
  check_lse(lse, p);
  check_mask(mask, p, stream);
  run_attention(p, q, k, v, &mask, out, lse, stream);
}

Estimate attention(Plan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                   const TensorView& out, const TensorView& lse, void* stream) {
  Plan::Impl& p = plan.impl();
  check_inputs(p, q, k, &v, &out);
  check_lse(lse, p);
  Estimate e = run_estimate(p, q, k, stream);
  run_attention(p, q, k, v, &e.mask, out, lse, stream);
  return e;
}

void dense_attention(Plan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                     const TensorView& out, const TensorView& lse, void* stream) {
  Plan::Impl& p = plan.impl();
  check_inputs(p, q, k, &v, &out);
  check_lse(lse, p);
  run_attention(p, q, k, v, nullptr, out, lse, stream);
}

Estimate estimate(Plan& plan, const TensorView& q, const KvCache& kv, void* stream) {
  PagedCall call(plan.impl(), q, kv, false, nullptr);
  return run_estimate(call.p, q, call.k, stream);
}

void sparse_attention(Plan& plan, const TensorView& q, const KvCache& kv, const BlockMask& mask,
                      const TensorView& out, const TensorView& lse, void* stream) {
  PagedCall call(plan.impl(), q, kv, true, &out);
  check_lse(lse, call.p);
  check_mask(mask, call.p, stream);
  run_attention(call.p, q, call.k, call.v, &mask, out, lse, stream);
}

Estimate attention(Plan& plan, const TensorView& q, const KvCache& kv, const TensorView& out,
                   const TensorView& lse, void* stream) {
  PagedCall call(plan.impl(), q, kv, true, &out);
  check_lse(lse, call.p);
  Estimate e = run_estimate(call.p, q, call.k, stream);
  run_attention(call.p, q, call.k, call.v, &e.mask, out, lse, stream);
  return e;
}

void dense_attention(Plan& plan, const TensorView& q, const KvCache& kv, const TensorView& out,
                     const TensorView& lse, void* stream) {
  PagedCall call(plan.impl(), q, kv, true, &out);
  check_lse(lse, call.p);
  run_attention(call.p, q, call.k, call.v, nullptr, out, lse, stream);
}

HostEstimate to_host(const Plan& plan, const Estimate& e, void* stream) {
  const Plan::Impl& p = plan.impl();
  const int heads = p.problem.q_heads, seqs = p.problem.num_seqs();
  HostEstimate h;
  h.num_seqs = seqs;
  h.q_heads = heads;
  h.mask.block_size = e.mask.block_size;
  h.mask.num_heads = e.mask.num_heads;
  h.mask.row_offsets.resize(e.mask.num_rows + 1);
  h.budget_blocks.resize(static_cast<std::size_t>(seqs) * heads);
  h.kept_blocks.resize(h.budget_blocks.size());
  auto fetch = [&](void* dst, const void* src, std::size_t bytes) {
    if (bytes == 0) return;
    if (e.device == Device::cuda)
      detail::cuda::copy_to_host_async(dst, src, bytes, stream);
    else
      std::memcpy(dst, src, bytes);
  };
  fetch(h.mask.row_offsets.data(), e.mask.row_offsets, h.mask.row_offsets.size() * sizeof(std::int64_t));
  fetch(h.budget_blocks.data(), e.budget_blocks, h.budget_blocks.size() * sizeof(std::int32_t));
  fetch(h.kept_blocks.data(), e.kept_blocks, h.kept_blocks.size() * sizeof(std::int64_t));
  if (e.device == Device::cuda) detail::cuda::synchronize(stream);
  h.mask.col_indices.resize(h.mask.row_offsets.back());
  fetch(h.mask.col_indices.data(), e.mask.col_indices, h.mask.col_indices.size() * sizeof(std::int32_t));
  if (e.device == Device::cuda) detail::cuda::synchronize(stream);
  h.causal_blocks.resize(h.budget_blocks.size());
  for (int s = 0; s < seqs; ++s)
    for (int hd = 0; hd < heads; ++hd) h.causal_blocks[static_cast<std::size_t>(s) * heads + hd] = p.causal_blocks(s);
  return h;
}

double HostEstimate::density(int seq, int head) const {
  const std::size_t i = static_cast<std::size_t>(seq) * q_heads + head;
  return causal_blocks[i] ? static_cast<double>(kept_blocks[i]) / causal_blocks[i] : 1.0;
}

double HostEstimate::density() const {
  std::int64_t kept = 0, causal = 0;
  for (std::size_t i = 0; i < kept_blocks.size(); ++i) {
    kept += kept_blocks[i];
    causal += causal_blocks[i];
  }
  return causal ? static_cast<double>(kept) / causal : 1.0;
}

}  // namespace proxyattn
