// The estimator on the GPU, stages 1-3, launched with no host synchronisation:
//   proxy     mean heads of each group at the strided tokens (qbar, kbar)
//   stage 2   per (head, chunk of key blocks): the last queries' (max, sum) over the chunk and
//             over each key block (on sm90 on wgmma, sm90/stage2.cuh); per (sequence,
//             head) the rows' log-sum-exp; per (head, chunk) the block masses from the sums
//   budget    per (sequence, head): sort the masses, cut at gamma, row counts of stage 3
//   (scan)    CSR row offsets from the counts (CUB, in the caller)
//   stage 1+3 per (query block, group): proxy block maxima, one ranking, every head's prefix
//             (on sm90 per group of query blocks, sm90/stage1.cuh)
#pragma once

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/kernels.hpp"
#include "cuda/layout.hpp"

namespace proxyattn::detail::cuda {

struct EstimateParams {
  const void* q;
  const void* k;
  std::int64_t q_tok, q_head, k_tok, k_head;
  Regions r;
  KvRows kv;  // where each key lives (contiguous or paged)
  int num_seqs, q_heads, kv_heads, groups, stride;
  int num_blocks;     // mask blocks (query blocks) of the batch
  int num_kv_blocks;  // key blocks of the batch: the stride of mass and head_order
  int total_chunks, sort_size;
  std::int64_t total_strided, min_blocks;
  bool keep_sink;
  BudgetMode budget_mode;
  bool exact_last_block;
  int head_columns;
  float gamma, last_gamma, scale_log2;  // last_gamma: the last query block's cut (rules::last_block_cut)
};

// What the estimator's kernel choice depends on (kernels.cpp).
struct EstimateShape {
  int sort_size, stride, groups;
  std::int64_t num_blocks;
};

// The estimator's part of a plan's kernel choice: stage 2, and stages 1 + 3, on sm90 where `sm90`
// (an sm_90 device the request allows) and this build's sm_90a code runs on `device`; stages 1 +
// 3 also only where their shape fits and (unless `always`) fills half of its `sms` multiprocessors
// (sm90/stage1.cuh, stage1_sm90_shape; `split`: its cluster size, 0 chosen there).
template <class T, int D>
void choose_estimate_kernels(const EstimateShape& s, int device, int sms, bool sm90, bool always, int split,
                             Kernels* k);

// Launch everything but the scan, and then stages 1 + 3, on the kernels of `k`; defined per
// (dtype, head dim) in estimate.cu.
template <class T, int D>
void launch_estimate_before_scan(const EstimateParams& p, const Kernels& k, cudaStream_t stream);
template <class T, int D>
void launch_estimate_after_scan(const EstimateParams& p, const Kernels& k, cudaStream_t stream);

}  // namespace proxyattn::detail::cuda
