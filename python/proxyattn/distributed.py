"""Context-parallel ProxyAttn: one sequence split over the ranks of a torch.distributed process
group (gloo on CPU tensors, NCCL on CUDA tensors), with zigzag sharding.

The sequence of n tokens is cut into 2 * world chunks at (i * n) // (2 * world); rank r holds
chunks r and 2 * world - 1 - r, so that every rank has the same share of the causal work
(zigzag_shard makes a rank's shard, zigzag_unshard joins them).

    out = proxyattn.distributed.attention(q_shard, k_shard, v_shard, group)

One call, on every rank of the group, with that rank's shards ([n_r, heads, dim], the same
positions for q, k and v). The masks are those of the single-process call on the whole sequence:
the estimator reads the queries only at the strided positions (stage 1's proxies) and in the last
query block (stage 2), so the ranks all-gather those query rows and every key and value, and each
rank runs the estimate on the whole sequence (the same call, the same mask) and attends its own
queries over the kept blocks. The estimate is not split over the ranks: its cost (about 1.5% of
dense attention at 128K on one GPU) does not shrink with the group.
"""
import torch
import torch.distributed as dist

from . import _api

__all__ = ["attention", "estimator_rows", "shard_sizes", "zigzag_bounds", "zigzag_chunks", "zigzag_shard",
           "zigzag_unshard"]


def zigzag_bounds(n, world):
    """The 2 * world + 1 chunk boundaries of a sequence of n tokens."""
    return [(i * n) // (2 * world) for i in range(2 * world + 1)]


def zigzag_chunks(n, rank, world):
    """The two (start, end) position ranges rank holds, in the order of its shard."""
    b = zigzag_bounds(n, world)
    return (b[rank], b[rank + 1]), (b[2 * world - 1 - rank], b[2 * world - rank])


def zigzag_shard(x, rank, world, dim=0):
    """Rank's shard of the whole sequence x (along dim): its two chunks, concatenated."""
    (a0, a1), (b0, b1) = zigzag_chunks(x.shape[dim], rank, world)
    return torch.cat([x.narrow(dim, a0, a1 - a0), x.narrow(dim, b0, b1 - b0)], dim)


def zigzag_unshard(shards, dim=0):
    """The whole sequence from every rank's shard, in rank order."""
    world, n = len(shards), sum(s.shape[dim] for s in shards)
    pieces = [None] * (2 * world)
    for r, s in enumerate(shards):
        (a0, a1), (b0, b1) = zigzag_chunks(n, r, world)
        pieces[r], pieces[2 * world - 1 - r] = s.narrow(dim, 0, a1 - a0), s.narrow(dim, a1 - a0, b1 - b0)
    return torch.cat(pieces, dim)


def shard_sizes(n, world):
    """Every rank's token count for a sequence of n tokens."""
    return [sum(b - a for a, b in zigzag_chunks(n, r, world)) for r in range(world)]


def _positions(n, rank, world):
    """The positions of rank's shard, in its order."""
    return torch.cat([torch.arange(a, b) for a, b in zigzag_chunks(n, rank, world)])


def estimator_rows(n, rank, world, stride, block_size):
    """The positions in rank's shard whose queries the estimator reads: the strided positions
    (stage 1's proxies) and the last query block (stage 2)."""
    pos = _positions(n, rank, world)
    return pos[(pos % stride == 0) | (pos >= n - block_size)]


_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _gather(x, counts, group):
    """Every rank's x [counts[r], ...] (padded to the largest count for the collective)."""
    width = max(counts)
    padded = x.new_zeros((width,) + tuple(x.shape[1:]))
    padded[: x.shape[0]] = x
    out = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(out, padded, group=group)
    return [o[:c] for o, c in zip(out, counts)]


def _check_shapes(q, k, v):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.ndim != 3:
            raise ValueError(f"{name}: expected a torch tensor [tokens, heads, dim], got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    if not (q.shape[0] == k.shape[0] == v.shape[0]):
        raise ValueError(f"q, k and v must hold the same positions, got {q.shape[0]}, {k.shape[0]} and {v.shape[0]} "
                         f"tokens")
    if k.shape != v.shape or k.shape[2] != q.shape[2]:
        raise ValueError(f"k and v must be [tokens, kv_heads, dim] with q's dim, got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.dtype not in _DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k and v must share a float dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")


def attention(q, k, v, group=None, softmax_scale=None, *, return_lse=False, return_mask=False, **options):
    """ProxyAttn on one sequence sharded over the group (zigzag): q [n_r, q_heads, dim], k, v
    [n_r, kv_heads, dim], this rank's shard. Returns this rank's out (q's layout); with return_lse
    also its log-sum-exp [q_heads, n_r]; with return_mask also the whole sequence's BlockMask (the
    same on every rank). Options: those of proxyattn.attention. Every rank of the group must call
    it with the same options; shapes that disagree across ranks are errors on every rank."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("proxyattn.distributed.attention: torch.distributed is not initialized "
                           "(call torch.distributed.init_process_group first)")
    _check_shapes(q, k, v)
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    opts = _api._options(options, k.shape[1])
    meta = torch.tensor([q.shape[0], q.shape[1], k.shape[1], q.shape[2], _DTYPES.index(q.dtype)],
                        dtype=torch.int64, device=q.device)
    metas = [torch.empty_like(meta) for _ in range(world)]
    dist.all_gather(metas, meta, group=group)
    metas = [m.tolist() for m in metas]
    for r, m in enumerate(metas):
        if m[1:] != metas[0][1:]:
            raise ValueError(f"ranks disagree on (q_heads, kv_heads, dim, dtype): rank 0 has {metas[0][1:]}, "
                             f"rank {r} has {m[1:]}")
    counts = [m[0] for m in metas]
    n = sum(counts)
    for r, (c, want) in enumerate(zip(counts, shard_sizes(n, world))):
        if c != want:
            raise ValueError(f"rank {r} holds {c} tokens, but its zigzag shard of the {n}-token sequence over "
                             f"{world} ranks has {want} (proxyattn.distributed.zigzag_shard)")
    hq, d = q.shape[1], q.shape[2]
    k_full = zigzag_unshard(_gather(k, counts, group))
    v_full = zigzag_unshard(_gather(v, counts, group))
    wanted = [estimator_rows(n, r, world, opts.stride, opts.block_size) for r in range(world)]
    index = torch.searchsorted(_positions(n, rank, world), wanted[rank]).to(q.device)  # rows of this shard
    rows = _gather(q.index_select(0, index), [len(w) for w in wanted], group)
    q_sparse = q.new_zeros((n, hq, d))
    for w, x in zip(wanted, rows):
        q_sparse[w.to(q.device)] = x
    mask = _api.estimate(q_sparse, k_full, softmax_scale, **options)
    row_offsets, col_indices = torch.as_tensor(mask.row_offsets), torch.as_tensor(mask.col_indices)
    outs, lses, done = [], [], 0
    for a, e in zigzag_chunks(n, rank, world):
        if e == a:
            continue
        bs = opts.block_size
        r0, r1 = (a // bs) * hq, ((e - 1) // bs + 1) * hq
        ro = row_offsets[r0:r1 + 1]
        ci = col_indices[int(ro[0]):int(ro[-1])]
        o, lse = _api.sparse_attention(q[done:done + e - a], k_full[:e], v_full[:e], (ro - ro[0], ci), softmax_scale,
                                       cu_seqlens=[0, e - a], cu_seqlens_k=[0, e], return_lse=True, block_size=bs,
                                       backend=opts.backend)
        outs.append(o)
        lses.append(lse)
        done += e - a
    out = torch.cat(outs) if outs else q.new_zeros(q.shape)
    lse = torch.cat(lses, 1) if lses else torch.zeros((hq, 0), dtype=torch.float32, device=q.device)
    extra = ([lse] if return_lse else []) + ([mask] if return_mask else [])
    return (out, *extra) if extra else out
