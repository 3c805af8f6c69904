"""proxyattn: ProxyAttn block-sparse attention for fast long-context prefill.

    import proxyattn
    out = proxyattn.attention(q, k, v)                      # q [b, n, hq, d], k, v [b, n, hkv, d]
    out, stats = proxyattn.attention(q, k, v, gamma=0.9, return_stats=True)
    out = proxyattn.attention_varlen(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len)
    out = proxyattn.attention_varlen(q_chunk, k, v, cu_seqlens_q, cu_seqlens_k)  # queries: the last positions
    out = proxyattn.attention_with_kvcache(q, k_cache, v_cache, cache_seqlens, block_table)  # paged

Inputs are torch, numpy, cupy or jax (CPU) arrays, used without a copy through DLPack; CUDA work
runs on the caller's current stream. `proxyattn.torch_ops` registers torch custom ops (torch.compile, CUDA
graphs) and `proxyattn.transformers.register()` adds attn_implementation="proxyattn".
"""
from ._api import (DEFAULTS, BlockMask, Options, attention, attention_varlen, attention_with_kvcache, clear_plan_cache,
                   dense_attention, estimate, presets, sparse_attention)
from ._core import cuda_available

__all__ = ["DEFAULTS", "BlockMask", "Options", "attention", "attention_varlen", "attention_with_kvcache",
           "clear_plan_cache", "cuda_available", "dense_attention", "estimate", "presets", "sparse_attention"]
__version__ = "0.1.0"
