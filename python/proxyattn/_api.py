"""The functional API. Layouts follow flash_attn_func and flash_attn_varlen_func:

- batched: q [batch, seqlen, q_heads, head_dim], k and v [batch, seqlen, kv_heads, head_dim];
- packed (varlen): q [total, q_heads, head_dim], k and v [total, kv_heads, head_dim] with
  cu_seqlens [num_seqs + 1] (the same packing for queries and keys: prefill self-attention).

Queries may be fewer than keys (a chunk of a prompt, or a later turn, against the keys already
cached): k and v [batch, seqlen_k, ...] with q [batch, seqlen_q, ...], or packed k and v with
cu_seqlens_k beside cu_seqlens; each sequence's queries are its last positions (causal,
bottom-right aligned as in FlashAttention 2.1+), on every backend.

Attention is causal; q_heads must be a multiple of kv_heads (GQA). Any token and head strides are
accepted as long as the last dimension is contiguous (a [batch, heads, seqlen, dim] tensor
transposed to [batch, seqlen, heads, dim] is fine for batch 1). Work runs on the caller's current
CUDA stream, without a host synchronisation unless per-head stats are asked for.
"""
import atexit
from collections import OrderedDict
from dataclasses import dataclass, field, fields, make_dataclass

import numpy as np

from . import _arrays, _core

# Plans are cached by problem, least recently used out first, at most 64 of them and, beyond the
# newest, at most 4 GiB of workspace (a 128K-token prompt's plan holds 0.14-0.65 GB): a plan keeps
# its workspace alive, and arrays viewing it keep the plan.
_PLAN_CACHE_SIZE = 64
_PLAN_CACHE_BYTES = 4 << 30
_plans = OrderedDict()
atexit.register(_plans.clear)  # plans and their workspaces go before the interpreter tears down


# The ProxyAttn options and their defaults come from the C++ Config (one field list, in
# src/python/module.cpp); see README for their meaning.
DEFAULTS = dict(_core.config_defaults())
Options = make_dataclass("Options", [(k, type(v), field(default=v)) for k, v in DEFAULTS.items()], frozen=True)
Options.__doc__ = "The ProxyAttn options: " + ", ".join(f"{k}={v!r}" for k, v in DEFAULTS.items())

# Presets: named sets of options. "paper" is the paper's rules as its authors ran them: one proxy
# per kv head on models with few kv heads (Qwen2.5-7B, 4) and one for all heads otherwise
# (Llama-3.1-8B, 8), each head's last-row block count in every row, gamma 0.95, a 2048-token
# floor, no forced sink and no head preferences (the diagonal block stays forced).
def presets(kv_heads):
    """{name: options} for a model with kv_heads kv heads."""
    groups = kv_heads if kv_heads <= 4 else 1
    return {
        "default": {},
        "paper": dict(gamma=0.95, stride=4, proxy_groups=groups, min_budget_tokens=2048, keep_sink=False,
                      budget_mode="last_row_count", exact_last_block=False, head_columns=0, last_block_gamma=0.0),
    }


@dataclass
class BlockMask:
    """A block mask in the library's CSR layout: row = (query block over the batch) * num_heads +
    head; row r keeps key blocks col_indices[row_offsets[r]:row_offsets[r + 1]], ascending and
    local to the row's sequence. Arrays live on the device of the inputs."""
    row_offsets: object  # int64 [rows + 1]
    col_indices: object  # int32 [>= row_offsets[-1]]
    block_size: int
    num_heads: int
    cu_seqlens: list
    cu_seqlens_k: list = None  # the keys' packing when queries are fewer than keys

    def _rows(self, seq):
        """(first mask row of sequence seq over the batch, its row count, the absolute block of
        its first row, its key blocks)."""
        qs, ks = self.cu_seqlens, self.cu_seqlens_k or self.cu_seqlens
        b = self.block_size
        spans = []
        for s in range(len(qs) - 1):
            q_len, kv_len = qs[s + 1] - qs[s], ks[s + 1] - ks[s]
            first = (kv_len - q_len) // b if q_len else 0
            rows = -(-kv_len // b) - first if q_len else 0
            spans.append((rows, first, -(-kv_len // b)))
        return (sum(r for r, _, _ in spans[:seq]),) + spans[seq]

    def to_dense(self, seq=0):
        """bool numpy array [num_heads, nb, nb] over sequence seq's nb key blocks: which key blocks
        each query block keeps (the blocks that hold no query of the call keep none)."""
        ro = _arrays.to_numpy(self.row_offsets).astype(np.int64)
        ci = _arrays.to_numpy(self.col_indices).astype(np.int64)
        row0, rows, first, nb = self._rows(seq)
        keep = np.zeros((self.num_heads, nb, nb), bool)
        for i in range(rows):
            for h in range(self.num_heads):
                r = (row0 + i) * self.num_heads + h
                keep[h, first + i, ci[ro[r]:ro[r + 1]]] = True
        return keep


class _Call:
    """One call's inputs, normalised to the packed layout, and its plan."""

    def __init__(self, q, k, v, cu_seqlens, softmax_scale, causal, options, cu_seqlens_k=None, page_size=0):
        if not causal:
            raise ValueError("causal must be True: proxyattn implements causal (prefill) attention")
        self.fw = _arrays.framework(q, "q")
        for name, x in (("q", q), ("k", k), ("v", v)):
            if x is not None and _arrays.framework(x, name) != self.fw:
                raise TypeError(f"{name}: must come from the same framework as q ({self.fw})")
            if self.fw == "numpy" and x is not None and str(x.dtype) == "bfloat16":
                raise TypeError(f"{name}: numpy bfloat16 arrays (ml_dtypes) cannot pass through DLPack; use torch or "
                                f"jax arrays for bfloat16, or float32")
        self.batched = q.ndim == 4
        self.batch_shape = tuple(q.shape[:2]) if self.batched else None
        if self.batched:
            if cu_seqlens is not None or cu_seqlens_k is not None:
                raise ValueError("cu_seqlens and cu_seqlens_k are only for packed 3-D inputs; q is 4-D "
                                 "[batch, seqlen, heads, dim]")
            b, n = q.shape[0], q.shape[1]
            cu_seqlens = [i * n for i in range(b + 1)] if b > 0 else [0, 0]  # no batch: one empty sequence
            if k is not None and k.ndim == 4 and k.shape[1] != n:  # fewer queries than keys
                if k.shape[1] < n:
                    raise ValueError(f"k: has {k.shape[1]} tokens per sequence, fewer than q's {n} (the queries "
                                     f"are the last positions of the keys), shape {tuple(k.shape)}")
                cu_seqlens_k = [i * k.shape[1] for i in range(b + 1)] if b > 0 else [0, 0]
            q = _flatten(q, "q")
            k = _flatten(k, "k") if k is not None else None
            v = _flatten(v, "v") if v is not None else None
        elif q.ndim == 3:
            cu_seqlens = _arrays.to_int_list(cu_seqlens, "cu_seqlens")
            cu_seqlens_k = _arrays.to_int_list(cu_seqlens_k, "cu_seqlens_k")
            if cu_seqlens is None:
                cu_seqlens = [0, q.shape[0]]
                if cu_seqlens_k is None and k is not None and k.ndim == 3 and k.shape[0] != q.shape[0]:
                    if k.shape[0] < q.shape[0]:
                        raise ValueError(f"k: has {k.shape[0]} tokens, fewer than q's {q.shape[0]} (the queries are "
                                         f"the last positions of the keys), shape {tuple(k.shape)}")
                    cu_seqlens_k = [0, k.shape[0]]  # one sequence: its last q.shape[0] positions query
        else:
            raise ValueError(f"q: expected [batch, seqlen, heads, dim] or [total, heads, dim], got shape {tuple(q.shape)}")
        for name, x in (("k", k), ("v", v)):
            if x is not None and x.ndim != 3 and not page_size:
                raise ValueError(f"{name}: must have as many dimensions as q, got shape {tuple(x.shape)}")
        self.q, self.k, self.v = q, k, v
        self.cu_seqlens = cu_seqlens
        self.cu_seqlens_k = None if cu_seqlens_k == cu_seqlens and not page_size else cu_seqlens_k
        self.device = _arrays.device_of(q, self.fw)
        self.stream = _arrays.current_stream(self.fw, self.device)
        self.options = options
        kv_heads = k.shape[-2] if k is not None else q.shape[1]
        self.plan = _plan(self.fw, q, kv_heads, cu_seqlens, self.cu_seqlens_k, softmax_scale, options, self.device,
                          self.stream, page_size)

    def outputs(self, out, return_lse):
        total, heads = self.q.shape[0], self.q.shape[1]
        if out is None:
            out = _arrays.empty(self.fw, self.q, tuple(self.q.shape))
        else:
            if _arrays.framework(out, "out") != self.fw:
                raise TypeError(f"out: must come from the same framework as q ({self.fw})")
            if self.fw == "jax":
                raise TypeError("out: jax arrays cannot be written in place; leave out unset and use the returned array")
            _arrays.writable(out, "out")
            expected = tuple(self.batch_shape) + tuple(self.q.shape[1:]) if self.batched else tuple(self.q.shape)
            if tuple(out.shape) != expected:
                raise ValueError(f"out: expected shape {expected} like q, got {tuple(out.shape)}")
            if self.batched:
                out = _flatten(out, "out")
        lse = _arrays.empty(self.fw, self.q, (heads, total), "float32") if return_lse else None
        return out, lse

    def result(self, out, lse):
        """out and lse back in the caller's layout: batched inputs give out [b, n, h, d] and
        lse [b, h, n], as flash_attn_func does; packed inputs give lse [h, total]."""
        out, lse = _arrays.as_framework(out, self.fw), _arrays.as_framework(lse, self.fw)
        if self.batched:
            b, n = self.batch_shape
            out = out.reshape(b, n, *out.shape[1:])
            if lse is not None:
                lse = lse.reshape(lse.shape[0], b, n)
                lse = lse.permute(1, 0, 2) if self.fw == "torch" else lse.transpose(1, 0, 2)
        return out, lse


def _flatten(x, name):
    """[b, n, h, d] -> [b * n, h, d] as a view; refuses (naming the strides) when that needs a copy."""
    b, n = x.shape[0], x.shape[1]
    st = _arrays.strides(x)
    if b > 1 and st[0] != n * st[1]:
        raise ValueError(
            f"{name}: a batch of {b} sequences needs batch stride == seqlen * token stride "
            f"({n} * {st[1]}), got strides {st}; call .contiguous() or pass a packed [total, heads, dim] "
            f"tensor with cu_seqlens")
    return x.reshape(b * n, x.shape[2], x.shape[3])


def _plan(fw, q, kv_heads, cu_seqlens, cu_seqlens_k, softmax_scale, o, device, stream, page_size=0):
    """A cached plan (with its workspace from the caller's allocator) for this problem."""
    dtype = _arrays.dtype_name(q, "q")
    scale = 0.0 if softmax_scale is None else float(softmax_scale)
    if not (scale >= 0.0):
        raise ValueError(f"softmax_scale must be positive, got {softmax_scale}")
    key = (fw, o, scale, q.shape[1], kv_heads, q.shape[2], dtype, device, tuple(cu_seqlens),
           tuple(cu_seqlens_k or ()), page_size)
    hit = _plans.get(key)
    if hit is not None:
        _plans.move_to_end(key)
        return hit[0]
    options = {f.name: getattr(o, f.name) for f in fields(o)}
    args = dict(options=options, scale=scale, q_heads=q.shape[1], kv_heads=kv_heads, head_dim=q.shape[2],
                dtype=dtype, device=device[0], device_index=device[1], cu_seqlens=list(cu_seqlens),
                cu_seqlens_k=list(cu_seqlens_k or ()))
    workspace, nbytes = None, 0
    if device[0] == "cuda":
        nbytes = _core.workspace_bytes(**args, page_size=page_size)
        workspace = _arrays.empty(fw, q, (max(nbytes, 1),), "uint8")
    plan = _core.Plan(**args, page_size=page_size, workspace=workspace, stream=stream)
    _plans[key] = (plan, nbytes)
    _trim_plan_cache()
    return plan


def _trim_plan_cache():
    """Drops the least recently used plans while the cache is over its count or its bytes (the
    newest plan always stays)."""
    total = sum(b for _, b in _plans.values())
    while len(_plans) > 1 and (len(_plans) > _PLAN_CACHE_SIZE or total > _PLAN_CACHE_BYTES):
        total -= _plans.popitem(last=False)[1][1]


def _check_mask_arrays(row_offsets, col_indices):
    """What the kernels cannot check without reading the mask: row_offsets non-decreasing from 0,
    and col_indices holding every entry it counts. Reads row_offsets back (a synchronisation for
    CUDA arrays), except while a CUDA graph is being captured, where the kernels' own bounds on
    col_indices hold."""
    for name, x in (("row_offsets", row_offsets), ("col_indices", col_indices)):
        _arrays.framework(x, name)
        if x.ndim != 1:
            raise ValueError(f"block_mask {name}: expected a 1-D array, got shape {tuple(x.shape)}")
    if _arrays.framework(row_offsets, "row_offsets") == "torch":
        torch = __import__("sys").modules["torch"]
        if row_offsets.is_cuda and torch.cuda.is_current_stream_capturing():
            return
    ro = _arrays.to_numpy(row_offsets)
    if ro.size == 0:
        raise ValueError("block_mask row_offsets: needs at least one entry (0)")
    if ro[0] != 0:
        raise ValueError(f"block_mask row_offsets[0] must be 0, got {int(ro[0])}")
    steps = np.diff(ro.astype(np.int64))
    if (steps < 0).any():
        i = int(np.argmax(steps < 0))
        raise ValueError(f"block_mask row_offsets must be non-decreasing, got row_offsets[{i}] = {int(ro[i])} > "
                         f"row_offsets[{i + 1}] = {int(ro[i + 1])}")
    if int(ro[-1]) > col_indices.shape[0]:
        raise ValueError(f"block_mask col_indices has {col_indices.shape[0]} entries, but row_offsets[-1] counts "
                         f"{int(ro[-1])}")


def clear_plan_cache():
    """Frees the cached plans and their workspaces."""
    _plans.clear()


def _options(kw, kv_heads):
    """Options from keyword arguments: unknown names and values of the wrong type are errors that
    name them; preset='name' starts from a preset (presets()), the other keywords override it."""
    kw = dict(kw)
    preset = kw.pop("preset", None)
    unknown = set(kw) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {sorted(unknown)}; options are {sorted(DEFAULTS)}")
    if preset is not None:
        table = presets(kv_heads)
        if preset not in table:
            raise ValueError(f"preset must be one of {sorted(table)}, got {preset!r}")
        kw = {**table[preset], **kw}
    for k, v in kw.items():
        want = type(DEFAULTS[k])
        ok = isinstance(v, want) or (want is float and isinstance(v, int)) or \
            (want is int and isinstance(v, (int, np.integer)) and not isinstance(v, bool)) or \
            (want is bool and isinstance(v, (int, np.integer)) and v in (0, 1))
        if not ok:
            raise TypeError(f"option {k}: expected {want.__name__}, got {v!r}")
        kw[k] = want(v)
    return Options(**kw)


def _stats(call):
    num_seqs, heads, budget, kept, causal, density, total = call.plan.stats(call.stream)
    shape = (num_seqs, heads)
    return {
        "budget_blocks": np.asarray(budget, np.int32).reshape(shape),
        "kept_blocks": np.asarray(kept, np.int64).reshape(shape),
        "causal_blocks": np.asarray(causal, np.int64).reshape(shape),
        "density": np.asarray(density).reshape(shape),
        "total_density": total,
    }


def _finish(call, out, lse, return_lse, stats=None):
    out, lse = call.result(out, lse)
    extra = ([lse] if return_lse else []) + ([stats] if stats is not None else [])
    return (out, *extra) if extra else out


def attention(q, k, v, softmax_scale=None, causal=True, *, cu_seqlens=None, cu_seqlens_k=None, out=None,
              return_lse=False, return_stats=False, **options):
    """ProxyAttn (stages 1-4): estimates the block mask and attends over the kept blocks.

    Returns out (the layout of q); with return_lse also the log-sum-exp (float32, [b, h, n] or
    [h, total]); with return_stats also a dict of per-head numbers, arrays [num_seqs, q_heads]:
    budget_blocks (k_h of stage 2), kept_blocks, causal_blocks, density, and total_density.
    Options: the fields of Options (gamma, block_size, stride, proxy_groups, min_budget_tokens,
    keep_sink, budget_mode, exact_last_block, head_columns, last_block_gamma, backend), or preset='paper' (presets())
    with overrides."""
    call = _Call(q, k, v, cu_seqlens, softmax_scale, causal, _options(options, k.shape[-2]), cu_seqlens_k)
    out, lse = call.outputs(out, return_lse)
    call.plan.attention(call.q, call.k, call.v, out, lse, call.stream)
    return _finish(call, out, lse, return_lse, _stats(call) if return_stats else None)


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                     softmax_scale=None, causal=True, *, block_table=None, **kwargs):
    """attention() with flash_attn_varlen_func's argument names: packed q, k, v and the
    cumulative sequence offsets of the queries and of the keys (each sequence's queries are its
    last positions). With block_table (int32 [num_seqs, max_pages]), as flash_attn_varlen_func
    takes it, k and v are paged caches [num_pages, page_size, kv_heads, head_dim] and
    cu_seqlens_k counts each sequence's keys in them (attention_with_kvcache, with queries of
    any lengths); dense=True then runs dense attention."""
    qs, ks = _arrays.to_int_list(cu_seqlens_q, "cu_seqlens_q"), _arrays.to_int_list(cu_seqlens_k, "cu_seqlens_k")
    for name, limit, cu in (("max_seqlen_q", max_seqlen_q, qs), ("max_seqlen_k", max_seqlen_k, ks)):
        longest = max((b - a for a, b in zip(cu, cu[1:])), default=0)
        if limit is not None and limit < longest:
            raise ValueError(f"{name} ({limit}) is smaller than the longest sequence ({longest})")
    if block_table is not None:
        if q.ndim != 3:
            raise ValueError(f"q: expected packed [total, heads, dim] with block_table, got shape {tuple(q.shape)}")
        if ks is None or qs is None or len(ks) != len(qs):
            raise ValueError(f"cu_seqlens_k: expected {len(qs or [])} offsets like cu_seqlens_q with block_table, "
                             f"got {ks}")
        return _paged(q, k, v, qs, ks, block_table, softmax_scale, causal, None, **kwargs)
    return attention(q, k, v, softmax_scale, causal, cu_seqlens=qs, cu_seqlens_k=ks, **kwargs)


def _offsets(lengths):
    """Cumulative offsets [0, l0, l0 + l1, ...] of per-sequence lengths (cu_seqlens from lengths)."""
    out = [0]
    for n in lengths:
        out.append(out[-1] + int(n))
    return out


def _paged(q, k_cache, v_cache, cu_q, cu_k, block_table, softmax_scale, causal, batch_shape, *, out=None,
           return_lse=False, return_stats=False, dense=False, **options):
    """Attention of packed q (offsets cu_q) over paged caches holding cu_k's keys per sequence."""
    if k_cache.ndim != 4 or v_cache.ndim != 4:
        raise ValueError(f"k_cache and v_cache: expected [num_pages, page_size, kv_heads, head_dim], got shapes "
                         f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    opts = Options(backend=options.get("backend", "auto")) if dense else _options(options, k_cache.shape[2])
    call = _Call(q, k_cache, v_cache, cu_q, softmax_scale, causal, opts, cu_k, page_size=k_cache.shape[1])
    if batch_shape is not None:
        call.batched, call.batch_shape = True, batch_shape
    out, lse = call.outputs(out, return_lse)
    call.plan.paged(call.q, k_cache, v_cache, block_table, out, lse, dense, call.stream)
    return _finish(call, out, lse, return_lse, _stats(call) if return_stats and not dense else None)


def attention_with_kvcache(q, k_cache, v_cache, cache_seqlens, block_table, softmax_scale=None, causal=True, **kwargs):
    """ProxyAttn over paged keys and values, with flash_attn_with_kvcache's names and layouts:
    q [batch, seqlen_q, q_heads, head_dim]; k_cache, v_cache [num_pages, page_size, kv_heads,
    head_dim]; cache_seqlens [batch] (int): the keys each sequence holds, its queries being the
    last seqlen_q of them (the new tokens' keys and values are already in the cache); block_table
    int32 [batch, max_pages]: the pages of each sequence in order. dense=True runs dense attention
    instead. Returns what attention() returns (attention_varlen with block_table takes queries of
    different lengths). On an sm90 GPU, pages shorter than the kernel's key tile, or calls with at
    least half as many queries as keys, first copy the sequences' keys and values into the plan's
    workspace (which then holds them: 4 KiB a token at 8 kv heads x 128)."""
    if q.ndim != 4:
        raise ValueError(f"q: expected [batch, seqlen_q, heads, dim], got shape {tuple(q.shape)}")
    lens = _arrays.to_int_list(cache_seqlens, "cache_seqlens")
    if lens is None or len(lens) != q.shape[0]:
        raise ValueError(f"cache_seqlens: expected {q.shape[0]} lengths (one per sequence of q), got {lens}")
    b, n = q.shape[0], q.shape[1]
    return _paged(_flatten(q, "q"), k_cache, v_cache, [i * n for i in range(b + 1)], _offsets(lens), block_table,
                  softmax_scale, causal, (b, n), **kwargs)


def dense_attention(q, k, v, softmax_scale=None, causal=True, *, cu_seqlens=None, cu_seqlens_k=None, out=None,
                    return_lse=False, backend="auto"):
    """Dense causal attention with the same kernel: the baseline (gamma = 1 gives the same)."""
    call = _Call(q, k, v, cu_seqlens, softmax_scale, causal, Options(backend=backend), cu_seqlens_k)
    out, lse = call.outputs(out, return_lse)
    call.plan.dense_attention(call.q, call.k, call.v, out, lse, call.stream)
    return _finish(call, out, lse, return_lse)


def estimate(q, k, softmax_scale=None, *, cu_seqlens=None, cu_seqlens_k=None, copy=True, return_stats=False,
             **options):
    """Stages 1-3 only: returns the BlockMask (and the stats dict with return_stats).

    copy=True returns arrays of their own, trimmed to the kept blocks (this reads the count back,
    a synchronisation); copy=False returns views of the plan's workspace, valid until the next
    estimate with the same shapes and options, without synchronising. With jax inputs the mask's
    arrays are numpy copies (jax keeps 64-bit offsets only under jax_enable_x64)."""
    call = _Call(q, k, None, cu_seqlens, softmax_scale, True, _options(options, k.shape[-2]), cu_seqlens_k)
    jax = call.fw == "jax"
    row_offsets, col_indices, _, _ = call.plan.estimate(call.q, call.k, call.stream, "numpy" if jax else call.fw)
    if copy or jax:
        nnz = int(row_offsets[-1])
        row_offsets, col_indices = _arrays.clone(row_offsets), _arrays.clone(col_indices[:nnz])
    mask = BlockMask(row_offsets, col_indices, call.options.block_size, call.q.shape[1], call.cu_seqlens,
                     call.cu_seqlens_k)
    return (mask, _stats(call)) if return_stats else mask


def sparse_attention(q, k, v, block_mask, softmax_scale=None, causal=True, *, cu_seqlens=None, cu_seqlens_k=None,
                     out=None, return_lse=False, block_size=128, backend="auto"):
    """Stage 4 on a given mask: a BlockMask, or a (row_offsets int64, col_indices int32) pair in the
    same layout on the device of q. Rows that keep nothing give out = 0 and lse = -inf."""
    if isinstance(block_mask, BlockMask):
        row_offsets, col_indices, block_size = block_mask.row_offsets, block_mask.col_indices, block_mask.block_size
        if cu_seqlens is None and q.ndim == 3:
            cu_seqlens = block_mask.cu_seqlens  # the mask knows its packing
            cu_seqlens_k = block_mask.cu_seqlens_k if cu_seqlens_k is None else cu_seqlens_k
    else:
        try:
            row_offsets, col_indices = block_mask
        except (TypeError, ValueError):
            raise TypeError("block_mask: expected a BlockMask or a (row_offsets, col_indices) pair") from None
    if _arrays.framework(q, "q") == "jax":  # host copies: 64-bit offsets whatever jax's x64 setting
        row_offsets, col_indices = np.asarray(row_offsets, np.int64), np.asarray(col_indices, np.int32)
    _check_mask_arrays(row_offsets, col_indices)
    call = _Call(q, k, v, cu_seqlens, softmax_scale, causal, Options(block_size=block_size, backend=backend),
                 cu_seqlens_k)
    out, lse = call.outputs(out, return_lse)
    call.plan.sparse_attention(call.q, call.k, call.v, row_offsets, col_indices, out, lse, call.stream)
    return _finish(call, out, lse, return_lse)
