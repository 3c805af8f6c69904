// Which kernels the CUDA backend launched, for tests and benchmarks (the choice is made in
// backend.cu; PROXYATTN_KERNEL=hopper|hopper-grid|portable, PROXYATTN_STAGE1 and
// PROXYATTN_STAGE2 force it).
#pragma once

namespace proxyattn::detail::cuda {

// The kernel of this thread's last attention call: "hopper" (sm_90a, persistent grid),
// "hopper-grid" (sm_90a, one CTA per work item) or "portable" (sm_80+); "" before the first.
const char* last_attention_kernel();
// The estimator's stage 1 + 3 kernel of the last estimate on this thread: "hopper" or "portable".
const char* last_stage1_kernel();
// The estimator's stage 2 kernel of the last estimate on this thread: "hopper" or "portable".
const char* last_stage2_kernel();

}  // namespace proxyattn::detail::cuda
