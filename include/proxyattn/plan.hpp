// Plan once, run many: the plan validates the problem, sizes and holds the workspace and the
// per-sequence tables, so that the run calls neither allocate nor synchronise (CUDA-graph safe).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "proxyattn/config.hpp"
#include "proxyattn/tensor.hpp"

namespace proxyattn {

// What the plan needs to know about the inputs. Q is [total_q, q_heads, head_dim], K and V are
// [total_kv, kv_heads, head_dim]; the sequences of a packed batch are given by cumulative offsets
// on the host, as in flash_attn_varlen_func (the run calls must see the same packing).
//
// Queries shorter than keys (a chunk of a prompt, or a later turn, against the keys already in
// the cache): cu_seqlens_k gives the keys' packing, and each sequence's queries are its last
// q_len positions (causal, bottom-right aligned as in FlashAttention 2.1+). Blocks keep absolute
// positions: query block m covers positions [m B, (m + 1) B) of the sequence, so a chunk that
// starts inside a block has a first row with fewer queries. Left empty, the keys share the
// queries' packing (self-attention over the whole prompt).
//
// Paged keys and values (page_size > 0): K and V are caches [num_pages, page_size, kv_heads,
// head_dim] read through a block table (attention.hpp, KvCache); cu_seqlens_k is then required
// and gives each sequence's key count (its differences; the offsets address nothing).
struct Problem {
  int q_heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  DType dtype = DType::bfloat16;
  Device device = Device::cpu;
  int device_index = 0;
  std::vector<std::int32_t> cu_seqlens;    // queries: [num_seqs + 1], [0] == 0, non-decreasing
  std::vector<std::int32_t> cu_seqlens_k;  // keys: empty, or as cu_seqlens with every kv_len >= q_len
  int page_size = 0;                       // 0: K and V packed like Q; > 0: paged caches

  // A batch of one sequence.
  static Problem single(std::int64_t tokens, int q_heads, int kv_heads, int head_dim, DType dtype,
                        Device device = Device::cpu, int device_index = 0);
  int num_seqs() const { return static_cast<int>(cu_seqlens.size()) - 1; }
  std::int64_t total_tokens() const { return cu_seqlens.empty() ? 0 : cu_seqlens.back(); }
  const std::vector<std::int32_t>& kv_seqlens() const { return cu_seqlens_k.empty() ? cu_seqlens : cu_seqlens_k; }
  std::int64_t total_kv_tokens() const { return kv_seqlens().empty() ? 0 : kv_seqlens().back(); }
  // Some sequence's queries are fewer than its keys.
  bool queries_shorter() const { return !cu_seqlens_k.empty() && cu_seqlens_k != cu_seqlens; }
  bool paged() const { return page_size > 0; }
};

class Plan {
 public:
  // Allocates its own workspace on problem.device. `stream` (a cudaStream_t) orders the upload
  // of the sequence tables for CUDA problems; ignored on the CPU.
  Plan(const Config& config, const Problem& problem, void* stream = nullptr);
  // Uses a caller-owned workspace of at least workspace_bytes(config, problem) bytes on
  // problem.device (for example from a framework's caching allocator); it must outlive the plan.
  Plan(const Config& config, const Problem& problem, void* workspace, std::size_t bytes,
       void* stream = nullptr);
  ~Plan();
  Plan(Plan&&) noexcept;
  Plan& operator=(Plan&&) noexcept;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;

  static std::size_t workspace_bytes(const Config& config, const Problem& problem);

  const Config& config() const;
  const Problem& problem() const;
  Backend backend() const;            // the resolved backend, never automatic
  float scale() const;                // the resolved softmax scale
  std::int64_t num_blocks() const;    // query blocks (mask rows per head) over the whole batch
  std::int64_t mask_rows() const;     // num_blocks() * q_heads
  std::int64_t mask_capacity() const; // kept blocks if every causal block were kept

  struct Impl;
  Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace proxyattn
