"""Baseline block selectors for a fair accuracy comparison with ProxyAttn.

Each selector turns one sequence's q [N, Hq, D] and k [N, Hkv, D] (flash_attn layout, causal,
RoPE applied, GQA: q head h reads kv head h // (Hq / Hkv)) into a block mask [Hq, Nb, Nb] bool
(Nb = ceil(N / block_size)) that is causal and keeps the diagonal (and by default the sink,
block 0). to_csr() gives the library's CSR layout, so the same sparse kernel computes every
method; match_density() tunes a selector to a target density, such as ProxyAttn's.
Everything is plain PyTorch and runs unchanged on CPU or CUDA tensors.
"""
from .common import density, from_csr, to_csr
from .flexprefill import flexprefill_estimate, flexprefill_mask
from . import pooling
from .matching import Match, match_density
from .static import static_mask
from .xattention import xattention_estimate, xattention_mask, xattention_scores

__all__ = [
    "density", "to_csr", "from_csr",
    "flexprefill_estimate", "flexprefill_mask",
    "xattention_estimate", "xattention_mask", "xattention_scores",
    "static_mask", "Match", "match_density", "pooling",
]
