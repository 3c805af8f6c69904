"""torch custom ops (torch.library), so that ProxyAttn works under torch.compile (fullgraph) and in
CUDA graphs: the ops have fake-tensor implementations giving the output shapes, allocate their
outputs through torch, and run on the current stream without synchronising.

    import proxyattn.torch_ops
    out, lse = proxyattn.torch_ops.attention(q, k, v, gamma=0.9)

(the keyword-friendly wrappers `attention`, `dense_attention`, `sparse_attention` and
`attention_with_kvcache` below call torch.ops.proxyattn.*; the ops that estimate take their
options as one string "name=value,...", so that every option of proxyattn.Options passes through
and the schema never lists them again).
q, k, v are [batch, seqlen, heads, dim] or packed [total, heads, dim] with cu_seqlens (a list of
ints, known when the graph is built, as flash_attn_varlen_func's max_seqlen is); queries fewer
than keys come as k, v [batch, seqlen_k, ...] or with cu_seqlens_k; paged keys and values as
flash_attn_with_kvcache takes them (cache_seqlens a list of ints, the block table a tensor).

CUDA-graph capture: the first call of a shape builds its plan (a workspace allocation and an
upload of small tables), so warm up each shape once before capturing, as one does for any
library that plans.
"""
from dataclasses import fields
from typing import List, Optional, Tuple

import torch

from . import _api

_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


def _check_like_q(q, **tensors):
    """q and each named tensor: a float dtype, q's dtype and device, the last dimension contiguous."""
    for name, x in dict(q=q, **tensors).items():
        if x.dtype not in _FLOATS:
            raise ValueError(f"{name}: dtype must be float16, bfloat16 or float32, got {x.dtype}")
        if x.dtype != q.dtype:
            raise ValueError(f"{name}: dtype {x.dtype} differs from q's {q.dtype}")
        if x.device != q.device:
            raise ValueError(f"{name}: device {x.device} differs from q's {q.device}")
        if x.stride(-1) != 1:
            raise ValueError(f"{name}: the last dimension must be contiguous, got strides {tuple(x.stride())}")


def _check(q, k, v, cu_seqlens, cu_seqlens_k=None):
    """The checks the fake implementations can do, so that torch.compile fails early and clearly."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != q.ndim or x.ndim not in (3, 4):
            raise ValueError(f"{name}: expected [batch, seqlen, heads, dim] or [total, heads, dim] like q, "
                             f"got shape {tuple(x.shape)}")
    _check_like_q(q, k=k, v=v)
    if (cu_seqlens is not None or cu_seqlens_k is not None) and q.ndim != 3:
        raise ValueError("cu_seqlens and cu_seqlens_k are only for packed [total, heads, dim] inputs")


def _out_like(q):
    """The output as the ops allocate it: q's shape, contiguous whatever q's strides."""
    return q.new_empty(q.shape)


def _lse_like(q):
    if q.ndim == 4:
        return q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32)
    return q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


@torch.library.custom_op("proxyattn::attention", mutates_args=())
def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: Optional[List[int]],
               cu_seqlens_k: Optional[List[int]], softmax_scale: float, options: str) -> Tuple[torch.Tensor, torch.Tensor]:
    _check(q, k, v, cu_seqlens, cu_seqlens_k)
    out, lse = _api.attention(q, k, v, softmax_scale or None, cu_seqlens=cu_seqlens, cu_seqlens_k=cu_seqlens_k,
                              return_lse=True, **decode_options(options))
    return out, lse.contiguous()


@_attention.register_fake
def _(q, k, v, cu_seqlens, cu_seqlens_k, softmax_scale, options):
    _check(q, k, v, cu_seqlens, cu_seqlens_k)
    return _out_like(q), _lse_like(q)


@torch.library.custom_op("proxyattn::dense_attention", mutates_args=())
def _dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: Optional[List[int]],
           cu_seqlens_k: Optional[List[int]], softmax_scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    _check(q, k, v, cu_seqlens, cu_seqlens_k)
    out, lse = _api.dense_attention(q, k, v, softmax_scale or None, cu_seqlens=cu_seqlens, cu_seqlens_k=cu_seqlens_k,
                                    return_lse=True)
    return out, lse.contiguous()


@_dense.register_fake
def _(q, k, v, cu_seqlens, cu_seqlens_k, softmax_scale):
    _check(q, k, v, cu_seqlens, cu_seqlens_k)
    return _out_like(q), _lse_like(q)


@torch.library.custom_op("proxyattn::sparse_attention", mutates_args=())
def _sparse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, row_offsets: torch.Tensor,
            col_indices: torch.Tensor, cu_seqlens: Optional[List[int]], cu_seqlens_k: Optional[List[int]],
            softmax_scale: float, block_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    _check(q, k, v, cu_seqlens, cu_seqlens_k)
    out, lse = _api.sparse_attention(q, k, v, (row_offsets, col_indices), softmax_scale or None,
                                     cu_seqlens=cu_seqlens, cu_seqlens_k=cu_seqlens_k, return_lse=True,
                                     block_size=block_size)
    return out, lse.contiguous()


@_sparse.register_fake
def _(q, k, v, row_offsets, col_indices, cu_seqlens, cu_seqlens_k, softmax_scale, block_size):
    _check(q, k, v, cu_seqlens, cu_seqlens_k)
    return _out_like(q), _lse_like(q)


def _check_paged(q, k_cache, v_cache, cache_seqlens, block_table, cu_seqlens_q):
    if q.ndim not in (3, 4) or k_cache.ndim != 4 or v_cache.ndim != 4:
        raise ValueError(f"q [batch, seqlen_q, heads, dim] (or packed [total, heads, dim] with cu_seqlens_q) and "
                         f"k_cache, v_cache [num_pages, page_size, kv_heads, dim] expected, got shapes "
                         f"{tuple(q.shape)}, {tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    if (q.ndim == 3) != (cu_seqlens_q is not None):
        raise ValueError("cu_seqlens_q: needed with packed q [total, heads, dim], and only then")
    if cu_seqlens_q is not None and len(cu_seqlens_q) != len(cache_seqlens) + 1:
        raise ValueError(f"cu_seqlens_q: expected {len(cache_seqlens) + 1} offsets (one more than cache_seqlens), "
                         f"got {len(cu_seqlens_q)}")
    _check_like_q(q, k_cache=k_cache, v_cache=v_cache)
    if block_table.dtype != torch.int32 or block_table.ndim != 2 or block_table.device != q.device:
        raise ValueError(f"block_table: expected int32 [batch, max_pages] on {q.device}, got {block_table.dtype} "
                         f"{tuple(block_table.shape)} on {block_table.device}")


@torch.library.custom_op("proxyattn::attention_with_kvcache", mutates_args=())
def _paged(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_seqlens: List[int],
           block_table: torch.Tensor, cu_seqlens_q: Optional[List[int]], softmax_scale: float, options: str,
           dense: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    _check_paged(q, k_cache, v_cache, cache_seqlens, block_table, cu_seqlens_q)
    opts = {} if dense else decode_options(options)
    if cu_seqlens_q is None:
        out, lse = _api.attention_with_kvcache(q, k_cache, v_cache, cache_seqlens, block_table, softmax_scale or None,
                                               return_lse=True, dense=dense, **opts)
    else:
        out, lse = _api.attention_varlen(q, k_cache, v_cache, cu_seqlens_q, _api._offsets(cache_seqlens),
                                         softmax_scale=softmax_scale or None,
                                         block_table=block_table, return_lse=True, dense=dense, **opts)
    return out, lse.contiguous()


@_paged.register_fake
def _(q, k_cache, v_cache, cache_seqlens, block_table, cu_seqlens_q, softmax_scale, options, dense):
    _check_paged(q, k_cache, v_cache, cache_seqlens, block_table, cu_seqlens_q)
    return _out_like(q), _lse_like(q)


def attention(q, k, v, softmax_scale=None, *, cu_seqlens=None, cu_seqlens_k=None, **options):
    """proxyattn.attention as a torch op: returns (out, lse). Options as proxyattn.attention's
    (preset included), checked here, before the op is traced."""
    o = _api._options(options, k.shape[-2])
    return torch.ops.proxyattn.attention(q, k, v, cu_seqlens, cu_seqlens_k, float(softmax_scale or 0.0),
                                         encode_options(o))


def encode_options(o):
    """An Options as the attention op's string: "name=value,..." (plain formatting, which
    torch.compile traces)."""
    return ",".join(f"{f.name}={getattr(o, f.name)}" for f in fields(o))


def decode_options(text):
    """The keyword options of an encode_options string (every name must be an Options field)."""
    out = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name not in _api.DEFAULTS:
            raise ValueError(f"options: unknown option {name!r} in {text!r}")
        kind = type(_api.DEFAULTS[name])
        out[name] = value == "True" if kind is bool else kind(value)
    return out


def dense_attention(q, k, v, softmax_scale=None, *, cu_seqlens=None, cu_seqlens_k=None):
    """proxyattn.dense_attention as a torch op: returns (out, lse)."""
    return torch.ops.proxyattn.dense_attention(q, k, v, cu_seqlens, cu_seqlens_k, float(softmax_scale or 0.0))


def sparse_attention(q, k, v, row_offsets, col_indices, softmax_scale=None, *, cu_seqlens=None, cu_seqlens_k=None,
                     block_size=128):
    """proxyattn.sparse_attention as a torch op on a CSR mask: returns (out, lse)."""
    return torch.ops.proxyattn.sparse_attention(q, k, v, row_offsets, col_indices, cu_seqlens, cu_seqlens_k,
                                                float(softmax_scale or 0.0), block_size)


def attention_with_kvcache(q, k_cache, v_cache, cache_seqlens, block_table, softmax_scale=None, *, cu_seqlens_q=None,
                           dense=False, **options):
    """proxyattn.attention_with_kvcache as a torch op: returns (out, lse); cache_seqlens a list of
    ints (known when the graph is built), block_table an int32 tensor. With cu_seqlens_q (a list),
    q is packed [total, heads, dim] and the sequences' queries may differ in length
    (attention_varlen's block_table)."""
    o = _api._options(options, k_cache.shape[-2])
    return torch.ops.proxyattn.attention_with_kvcache(
        q, k_cache, v_cache, [int(n) for n in cache_seqlens], block_table,
        None if cu_seqlens_q is None else [int(n) for n in cu_seqlens_q], float(softmax_scale or 0.0),
        encode_options(o), bool(dense))
