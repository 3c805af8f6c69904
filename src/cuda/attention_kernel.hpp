// Which sparse-attention kernel the CUDA backend launched, for tests and benchmarks (the choice
// is made in backend.cu; PROXYATTN_KERNEL=hopper|hopper-grid|portable forces it).
#pragma once

namespace proxyattn::detail::cuda {

// The kernel of this thread's last attention call: "hopper" (sm_90a, persistent grid),
// "hopper-grid" (sm_90a, one CTA per work item) or "portable" (sm_80+); "" before the first.
const char* last_attention_kernel();

}  // namespace proxyattn::detail::cuda
