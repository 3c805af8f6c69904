"""ProxyAttn's selection with another stage-1 pooling, for study (docs/method.md, stages 1 and 3).

Stage 1 scores a key block for a query block by the proxy's largest softmax probability in the
(query block, key block) cell of the strided proxy attention (max pooling). This module re-ranks
with the cell's summed probability (sum pooling, the block's estimated mass, as the
XAttention-style selector ranks), or with the two together, and keeps everything else as the
library decides it: each row's count (from the library's own mask, so the density is the
library's row by row), the diagonal block, the sink, and each head's preferred blocks (its own
block masses on the last query block; the whole order on that block itself). With pooling="max"
it gives the library's mask (up to near ties of the scores), which the tests check.

    mask = select(q, k, scale, pooling="sum", **options)    # bool [Hq, Nb, Nb]
"""
import torch

import proxyattn

from .common import ceil_div, check_inputs, from_csr

POOLINGS = ("max", "sum", "max+sum")


def _auto_groups(kv_heads):
    """rules.hpp's auto_proxy_groups: one per kv head up to 4, one per 4 kv heads beyond."""
    return kv_heads if kv_heads <= 4 else ceil_div(kv_heads, 4)


def _proxy_cells(q, k, scale, groups, stride, block, pooling):
    """The stage-1 cell scores [groups, Nb, Nb] with the given pooling (float64)."""
    n, hq, hkv = q.shape[0], q.shape[1], k.shape[1]
    nb, na = ceil_div(n, block), ceil_div(n, stride)
    pos = torch.arange(na, device=q.device) * stride
    cell = (pos // block)
    out = torch.zeros(groups, nb, nb, dtype=torch.float64, device=q.device)
    for j in range(groups):
        qbar = q[pos, j * hq // groups:(j + 1) * hq // groups].double().mean(1)
        kbar = k[pos, j * hkv // groups:(j + 1) * hkv // groups].double().mean(1)
        s = scale * qbar @ kbar.T
        s.masked_fill_(torch.ones(na, na, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        p = torch.softmax(s, -1)
        flat = (cell[:, None] * nb + cell[None, :]).expand(na, na).reshape(-1)
        if pooling in ("max", "max+sum"):
            mx = torch.zeros(nb * nb, dtype=torch.float64, device=q.device)
            mx.scatter_reduce_(0, flat, p.reshape(-1), reduce="amax")
            out[j] += mx.view(nb, nb)
        if pooling in ("sum", "max+sum"):
            rows = torch.bincount(cell, minlength=nb).clamp(min=1).double()
            sm = torch.zeros(nb * nb, dtype=torch.float64, device=q.device)
            sm.index_add_(0, flat, p.reshape(-1))
            out[j] += sm.view(nb, nb) / rows[:, None]  # mean over the cell's proxy rows
    return out


def _head_mass(q, k, scale, block):
    """Each head's block masses on the last query block (stage 2): [Hq, Nb] float64."""
    n, hq, hkv = q.shape[0], q.shape[1], k.shape[1]
    nb, rows = ceil_div(n, block), min(block, n)
    i = torch.arange(n - rows, n, device=q.device)
    kk = k.double().repeat_interleave(hq // hkv, dim=1)  # [n, hq, d]
    s = scale * torch.einsum("rhd,thd->hrt", q[i].double(), kk)
    s.masked_fill_(torch.arange(n, device=q.device)[None, None, :] > i[None, :, None], float("-inf"))
    p = torch.softmax(s, -1).sum(1) / rows  # [hq, n]
    mass = torch.zeros(hq, nb, dtype=torch.float64, device=q.device)
    mass.index_add_(1, torch.arange(n, device=q.device) // block, p)
    return mass


def select(q, k, scale, pooling="sum", **options):
    """The library's mask for one sequence (q [N, Hq, D], k [N, Hkv, D]) with stage 1's pooling
    replaced: bool [Hq, Nb, Nb], every row keeping as many blocks as the library's."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    n, hq, hkv, _, nb = check_inputs(q, k, options.get("block_size", 128))
    o = {**proxyattn.DEFAULTS, **options}
    block, stride = o["block_size"], o["stride"]
    if block % stride:
        raise ValueError(f"stride ({stride}) must divide block_size ({block})")
    groups = o["proxy_groups"] or _auto_groups(hkv)
    est, stats = proxyattn.estimate(q, k, scale, return_stats=True, copy=False, **options)
    library = from_csr(est.row_offsets.to(q.device), est.col_indices[:int(est.row_offsets[-1])].to(q.device), hq, nb)
    count = library.sum(-1)  # [hq, nb]
    budget = torch.as_tensor(stats["budget_blocks"], device=q.device).reshape(-1)[:hq].long()

    cells = _proxy_cells(q, k, scale, groups, stride, block, pooling)[torch.arange(hq, device=q.device) // (hq // groups)]
    cells = torch.nan_to_num(cells, nan=-1.0e300)  # NaN ranks last (rules.hpp, rank_key)
    order = torch.sort(_head_mass(q, k, scale, block), dim=-1, descending=True, stable=True).indices  # [hq, nb]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(nb, device=q.device).expand(hq, nb))  # block -> place in order
    m = torch.arange(nb, device=q.device)
    # Priorities in take order: the diagonal, the sink, the preferred blocks in the head's order,
    # then the cell scores (probabilities or their means: below 2). Ties go to the lower block.
    columns = torch.minimum(budget, torch.tensor(o["head_columns"], device=q.device))
    preferred = (rank[:, None, :] < columns[:, None, None]).expand(hq, nb, nb).clone()
    if o["exact_last_block"]:
        preferred[:, nb - 1, :] = True
    prio = torch.where(preferred, 4.0 + (nb - rank[:, None, :]).double(), cells)
    if o["keep_sink"]:
        prio[:, :, 0] = 2.0 * nb + 8.0
    prio[:, m, m] = 2.0 * nb + 16.0
    prio.masked_fill_(m[None, None, :] > m[None, :, None], float("-inf"))
    place = torch.empty_like(prio, dtype=torch.long)
    idx = torch.sort(prio, dim=-1, descending=True, stable=True).indices
    place.scatter_(2, idx, torch.arange(nb, device=q.device).expand(hq, nb, nb))
    return place < count[:, :, None]
