"""Pieces of the selector study: the true dense block mass, a Python mirror of ProxyAttn's stages
1-3 (checked against proxyattn.estimate by check_mirror.py), oracles, and recall from block mass.

Notation: N tokens, B = 128, Nb = ceil(N / B), Hq = 14 query heads, Hkv = 2 kv heads.
W[h, m, n] = sum over the queries t of block m of the dense softmax probability that query t of
head h puts on key block n. recall(mask) = sum(mask * W) / (Hq * N) is exactly the mean over heads
and rows of exp(lse_sparse - lse_dense) that run_eval.py reports (the kept share of each row's
softmax mass), so every mask is scored without running attention; check_recall.py confirms it
against proxyattn.sparse_attention.
"""
import argparse
import math
import os

import torch

B = 128


def layer_file(capture_dir, layer):
    """Where capture.py saves one layer's q, k, v and scale."""
    return os.path.join(capture_dir, "L%02d.pt" % layer)


def load_layer(capture_dir, layer):
    return torch.load(layer_file(capture_dir, layer))


def captured_layers(doc):
    """(capture folder, layer, its tensors) for each layer that a check script's command line
    names: CAPTURE_DIR [--layers L ...] (default 0 and 11). Autograd is off from here on."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture_dir")
    ap.add_argument("--layers", type=int, nargs="+", default=[0, 11])
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    for layer in args.layers:
        yield args.capture_dir, layer, load_layer(args.capture_dir, layer)


def cached_block_mass(capture_dir, layer, q, k, scale):
    """dense_block_mass of a captured layer, computed once and kept next to the capture."""
    cache = os.path.join(capture_dir, "W_L%02d.pt" % layer)
    if os.path.exists(cache):
        return torch.load(cache)
    W, lse = dense_block_mass(q, k, scale)
    torch.save((W, lse), cache)
    return W, lse


def ceil_div(a, b):
    return -(-a // b)


# ----------------------------------------------------------------------------------------------
# Dense block mass

def dense_block_mass(q, k, scale, chunk=512):
    """W [Hq, Nb, Nb] float64 and lse [Hq, N] float32 of causal softmax(scale q k^T), GQA."""
    n, hq, d = q.shape
    hkv = k.shape[1]
    r = hq // hkv
    nb = ceil_div(n, B)
    W = torch.zeros(hq, nb, nb, dtype=torch.float64)
    lse = torch.empty(hq, n)
    assert chunk % B == 0
    for g in range(hkv):
        qh = q[:, g * r:(g + 1) * r].permute(1, 0, 2)          # [r, n, d]
        kg = k[:, g]                                             # [n, d]
        for r0 in range(0, n, chunk):
            r1 = min(n, r0 + chunk)
            kend = r1
            s = torch.matmul(qh[:, r0:r1], kg[:kend].T).mul_(scale)  # [r, rows, kend]
            i = torch.arange(r0, r1)[:, None]
            j = torch.arange(kend)[None, :]
            s.masked_fill_(j > i, -math.inf)
            mx = s.amax(-1, keepdim=True)
            s.sub_(mx).exp_()                                       # one exp pass
            z = s.sum(-1)                                           # [r, rows]
            lse[g * r:(g + 1) * r, r0:r1] = mx[..., 0] + torch.log(z)
            nbk = ceil_div(kend, B)
            if nbk * B != kend:
                s = torch.nn.functional.pad(s, (0, nbk * B - kend))
            pb = s.view(r, r1 - r0, nbk, B).sum(-1).double() / z.double()[..., None]
            m0 = r0 // B
            nbq = ceil_div(r1 - r0, B)
            pb = torch.nn.functional.pad(pb, (0, 0, 0, nbq * B - (r1 - r0)))
            W[g * r:(g + 1) * r, m0:m0 + nbq, :nbk] += pb.view(r, nbq, B, nbk).sum(2)
    return W, lse


def recall(mask, W, n):
    """Mean over heads and rows of the kept share of the dense softmax mass."""
    return float((W * mask).sum()) / (W.shape[0] * n)


def recall_per_head(mask, W, n):
    return (W * mask).sum((1, 2)) / n


def density(mask):
    hq, nb, _ = mask.shape
    return float(mask.sum()) / (hq * nb * (nb + 1) / 2)


# ----------------------------------------------------------------------------------------------
# ProxyAttn mirror (DESIGN.md section 1, stages 1-3)

def group_ranges(hq, hkv, groups):
    """(q heads, kv heads) of each proxy group; groups == hq means one proxy per q head
    (outside DESIGN's g | Hkv: a diagnostic)."""
    r = hq // hkv
    if groups == hq:
        return [([h], [h // r]) for h in range(hq)]
    assert hkv % groups == 0
    per = hkv // groups
    return [(list(range(j * per * r, (j + 1) * per * r)), list(range(j * per, (j + 1) * per)))
            for j in range(groups)]


def proxy_scores(q, k, scale, groups=1, stride=4, pool="max", chunk_blocks=8):
    """Stage 1: A [groups, Nb, Nb] float32 (0 above the diagonal). pool='max' is DESIGN's
    (token-level softmax, then max over the block); 'sum' sums the probabilities (diagnostic)."""
    n, hq, d = q.shape
    hkv = k.shape[1]
    nb = ceil_div(n, B)
    pos = torch.arange(0, n, stride)
    ns = pos.numel()
    per_block = B // stride
    out = torch.zeros(len(group_ranges(hq, hkv, groups)), nb, nb)
    for j, (qh, kh) in enumerate(group_ranges(hq, hkv, groups)):
        qbar = q[pos][:, qh].mean(1)
        kbar = k[pos][:, kh].mean(1)
        blk = torch.div(torch.arange(ns) * stride, B, rounding_mode="floor")   # block of each strided token
        for m0 in range(0, nb, chunk_blocks):
            m1 = min(nb, m0 + chunk_blocks)
            a0, a1 = m0 * per_block, min(ns, m1 * per_block)
            s = (qbar[a0:a1] @ kbar[:a1].T) * scale
            ii = torch.arange(a0, a1)[:, None]
            jj = torch.arange(a1)[None, :]
            s.masked_fill_(jj > ii, -math.inf)
            p = torch.softmax(s, -1)                               # [rows, keys]
            kb = blk[:a1]
            nbk = int(kb[-1]) + 1
            padk = nbk * per_block - a1
            p = torch.nn.functional.pad(p, (0, padk))
            p = p.view(a1 - a0, nbk, per_block)
            p = p.amax(-1) if pool == "max" else p.sum(-1)         # [rows, nbk]
            rows = a1 - a0
            nq = ceil_div(rows, per_block)
            p = torch.nn.functional.pad(p, (0, 0, 0, nq * per_block - rows))
            p = p.view(nq, per_block, nbk)
            p = p.amax(1) if pool == "max" else p.sum(1)
            out[j, m0:m0 + nq, :nbk] = p
    return out


def stage2_mass(q, k, scale):
    """a [Hq, Nb]: block mass of the last min(B, N) queries at full resolution (mean over them)."""
    n, hq, d = q.shape
    hkv = k.shape[1]
    r = hq // hkv
    nb = ceil_div(n, B)
    L = min(B, n)
    ql = q[n - L:].double()
    a = torch.zeros(hq, nb, dtype=torch.float64)
    for h in range(hq):
        s = (ql[:, h] @ k[:, h // r].double().T) * scale
        ii = torch.arange(n - L, n)[:, None]
        jj = torch.arange(n)[None, :]
        s.masked_fill_(jj > ii, -math.inf)
        p = torch.softmax(s, -1)
        p = torch.nn.functional.pad(p, (0, nb * B - n)).view(L, nb, B).sum(-1)
        a[h] = p.mean(0)
    return a


def budget_blocks(a, gamma):
    """k_h: smallest count of the sorted block masses whose prefix sum reaches gamma."""
    srt = torch.sort(a, -1, descending=True).values.cumsum(-1)
    nb = a.shape[-1]
    if gamma >= 1.0:
        return torch.full((a.shape[0],), nb, dtype=torch.long)
    k = (srt < gamma).sum(-1) + 1
    return k.clamp(max=nb)


def forced_mask(nb, keep_sink=True):
    f = torch.eye(nb, dtype=torch.bool)
    if keep_sink:
        f[:, 0] = True
    return f


def rank_positions(scores, keep_sink=True):
    """scores [G, Nb, Nb] -> pos [G, Nb, Nb] long: the position of key block n in row m's order
    (forced first, lower index first; then descending score, ties lower index first);
    ineligible blocks (n > m) get Nb."""
    g, nb, _ = scores.shape
    causal = torch.ones(nb, nb, dtype=torch.bool).tril_()
    f = forced_mask(nb, keep_sink)
    key = scores.double().masked_fill(~causal, -math.inf)
    # forced first, in index order: give them keys above any score, decreasing with the index
    fk = 1e30 * (2.0 - torch.arange(nb, dtype=torch.float64) / nb)
    key = torch.where(f & causal, fk.expand(nb, nb), key)
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices
    pos = torch.empty_like(order)
    pos.scatter_(-1, order, torch.arange(nb).expand_as(order).contiguous())
    pos.masked_fill_(~causal, nb)
    return pos


def row_counts(kh, nb, keep_sink=True, mode="row_ratio", min_blocks=0):
    """k_hm [Hq, Nb] of stage 3."""
    m = torch.arange(nb)
    nforced = 1 + ((m >= 1) & keep_sink).long()
    if mode == "row_ratio":
        c = torch.div(kh[:, None] * (m[None] + 1) + nb - 1, nb, rounding_mode="floor")
    else:
        c = kh[:, None].expand(-1, nb)
    c = torch.maximum(c, torch.full_like(c, min_blocks))
    c = torch.maximum(c, nforced[None])
    return torch.minimum(c, (m + 1)[None])


def mask_from_counts(pos, head_group, counts):
    """pos [G, Nb, Nb], head_group [Hq] (group of each head), counts [Hq, Nb] -> mask [Hq, Nb, Nb]."""
    return pos[head_group] < counts[:, :, None]


def head_groups(hq, hkv, groups):
    hg = torch.empty(hq, dtype=torch.long)
    for j, (qh, _) in enumerate(group_ranges(hq, hkv, groups)):
        hg[qh] = j
    return hg


# ----------------------------------------------------------------------------------------------
# Oracles

def oracle_positions(W, keep_sink=True):
    """Per (head, row) ranking by the true dense block mass."""
    return rank_positions(W, keep_sink)


def global_counts(pos, head_group, W, target_blocks, keep_sink=True):
    """Per-(head, row) counts that maximise recall for a total of target_blocks kept blocks when
    each row keeps a prefix of its ranking pos: greedy on the blocks' true mass in rank order
    made monotone (running min of the mass along each row's order, so prefixes stay prefixes).
    With the oracle's own ranking this is the exact optimum."""
    hq, nb, _ = W.shape
    p = pos[head_group]                                      # [Hq, Nb, Nb]
    order = torch.argsort(p, -1)                             # blocks in rank order
    wv = W.gather(-1, order)                                 # mass in rank order
    causal_len = torch.arange(1, nb + 1)
    idx = torch.arange(nb)
    valid = idx[None, None, :] < causal_len[None, :, None]
    # forced blocks come first in pos: give them +inf so they are always kept
    nforced = 1 + ((torch.arange(nb) >= 1) & keep_sink).long()
    forced = idx[None, None, :] < nforced[None, :, None]
    # prefix-closed: a block's priority is the smallest mass up to it (cummin along the order)
    pri = torch.cummin(wv.masked_fill(forced, math.inf), -1).values
    pri = pri.masked_fill(~valid, -math.inf)
    flat = pri.flatten()
    kth = torch.topk(flat, int(target_blocks)).values[-1]
    keep = pri >= kth
    return keep.sum(-1)                                      # [Hq, Nb]
