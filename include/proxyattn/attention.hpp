// The entry points. Every call runs on the plan's backend; CUDA calls are asynchronous on
// `stream` (a cudaStream_t; null is the legacy default stream) and neither allocate nor
// synchronise. Layouts: Q, O [total_q, q_heads, head_dim]; K, V [total_kv, kv_heads, head_dim]
// (total_kv = total_q unless the problem has cu_seqlens_k), any token and head strides, the last
// dimension contiguous; LSE [q_heads, total_q] float32, contiguous, natural log. Pass an
// undefined TensorView{} as lse to skip it.
#pragma once

#include <cstdint>
#include <vector>

#include "proxyattn/mask.hpp"
#include "proxyattn/plan.hpp"
#include "proxyattn/tensor.hpp"

namespace proxyattn {

// The result of stages 1-3. It lives in the plan's workspace: the next estimate overwrites it.
struct Estimate {
  BlockMask mask;
  Device device = Device::cpu;
  const std::int32_t* budget_blocks = nullptr;  // [num_seqs, q_heads]: k_h of stage 2
  const std::int64_t* kept_blocks = nullptr;    // [num_seqs, q_heads]: kept blocks, all rows
};

// A host copy of an Estimate, with the per-head statistics a user prints.
struct HostEstimate {
  HostBlockMask mask;
  int num_seqs = 0;
  int q_heads = 0;
  std::vector<std::int32_t> budget_blocks;    // [num_seqs, q_heads]
  std::vector<std::int64_t> kept_blocks;      // [num_seqs, q_heads]
  std::vector<std::int64_t> causal_blocks;    // [num_seqs, q_heads]: the rows' causal blocks, Nb (Nb + 1) / 2
                                              // for a whole prompt
  double density(int seq, int head) const;    // kept / causal
  double density() const;                     // over the whole batch
};

// Stages 1-3: the per-head budgets and the block mask.
Estimate estimate(Plan& plan, const TensorView& q, const TensorView& k, void* stream = nullptr);

// Stage 4: attention over the kept blocks of any mask in the plan's row layout (mask.hpp).
// mask.block_size must equal the plan's block size. A row that keeps no key gives O = 0 and
// LSE = -inf.
void sparse_attention(Plan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                      const BlockMask& mask, const TensorView& out, const TensorView& lse,
                      void* stream = nullptr);

// Stages 1-4.
Estimate attention(Plan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                   const TensorView& out, const TensorView& lse, void* stream = nullptr);

// Dense causal attention: the baseline, and what gamma = 1 must reproduce.
void dense_attention(Plan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                     const TensorView& out, const TensorView& lse, void* stream = nullptr);

// Paged keys and values, for a plan whose problem has page_size > 0: the caches and the block
// table that maps each sequence's keys to pages. Key position t of sequence s sits in page
// block_table[s][t / page_size], slot t % page_size. The pages of a cache must be whole blocks
// of memory: k.stride[0] == page_size * k.stride[1] (as torch.empty gives). A host table's
// entries are checked against the cache; a device table's are not (that would synchronise each
// call): there a page outside the cache reads as zeros. On CUDA, page_size must divide 128 or be
// a multiple of it.
struct KvCache {
  TensorView k;            // [num_pages, page_size, kv_heads, head_dim]
  TensorView v;            // the same shape (undefined for estimate)
  TensorView block_table;  // int32 [num_seqs, max_pages], max_pages >= ceil(kv_len / page_size)
};

Estimate estimate(Plan& plan, const TensorView& q, const KvCache& kv, void* stream = nullptr);
void sparse_attention(Plan& plan, const TensorView& q, const KvCache& kv, const BlockMask& mask,
                      const TensorView& out, const TensorView& lse, void* stream = nullptr);
Estimate attention(Plan& plan, const TensorView& q, const KvCache& kv, const TensorView& out,
                   const TensorView& lse, void* stream = nullptr);
void dense_attention(Plan& plan, const TensorView& q, const KvCache& kv, const TensorView& out,
                     const TensorView& lse, void* stream = nullptr);

// Copies an estimate to the host; for CUDA plans this synchronises `stream`.
HostEstimate to_host(const Plan& plan, const Estimate& estimate, void* stream = nullptr);

}  // namespace proxyattn
