// The estimator on the GPU, stages 1-3, launched with no host synchronisation:
//   proxy     mean heads of each group at the strided tokens (qbar, kbar)
//   stage 2   per (head, chunk of key blocks): the last queries' (max, sum) over the chunk and
//             over each key block (on Hopper on wgmma, hopper/stage2_sm90.cuh); per (sequence,
//             head) the rows' log-sum-exp; per (head, chunk) the block masses from the sums
//   budget    per (sequence, head): sort the masses, cut at gamma, row counts of stage 3
//   (scan)    CSR row offsets from the counts (CUB, in the caller)
//   stage 1+3 per (query block, group): proxy block maxima, one ranking, every head's prefix
//             (on Hopper per group of query blocks, hopper/stage1_sm90.cuh)
#pragma once

#include <cstdint>

#include "cuda/common.cuh"
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
  float gamma, scale_log2;
};

// Whether this build has the sm_90a code of the wgmma stage 2 for `device` (an sm_90 device).
// The caller asks once per plan: the answer also sizes the workspace's block sums (layout.hpp).
template <class T, int D>
bool stage2_sm90_runs(int device);

// Launches everything but the scan; defined per (dtype, head dim) in estimate.cu. Stage 2 runs
// on wgmma (hopper/stage2_sm90.cuh) when stage2_device is not -1 (a device where
// stage2_sm90_runs said yes).
// Stage 1 + 3 run on wgmma (hopper/stage1_sm90.cuh) on an sm_90 hopper_device that this build
// has sm_90a code for, where the input also has enough query blocks to fill half the device
// (always, with hopper_always), each group of query blocks on a cluster of hopper_split CTAs
// (0: the launcher chooses). Else, and with -1, the portable mma.sync kernels run.
template <class T, int D>
void launch_estimate_before_scan(const EstimateParams& p, int stage2_device, cudaStream_t stream);
template <class T, int D>
void launch_estimate_after_scan(const EstimateParams& p, int hopper_device, bool hopper_always, int hopper_split,
                                cudaStream_t stream);

}  // namespace proxyattn::detail::cuda
