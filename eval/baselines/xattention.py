"""XAttention-style selector (Xu et al. 2025, "XAttention: Block Sparse Attention with
Antidiagonal Scoring").

With stride S, the attention matrix is cut into S x S tiles; tile (i, j) is scored by the sum
of its antidiagonal, sum_t q[iS + S-1-t] . k[jS + t]. Concatenating the S tokens of a tile
(the query's in reverse order) turns that sum into one dot product of length S*D, so the
scores are a single (N/S) x (N/S) matmul, scaled by scale / S. Each strided query row is
softmaxed over its causal strided keys (j <= i), the probabilities are summed per
(query block, key block), and each row keeps, after the diagonal and the sink, the blocks of
largest sum until the kept mass reaches tau of the row's mass.

As in the public implementation, the sequence is zero-padded to a whole number of blocks and
a strided query row made only of padding contributes nothing (padding tokens add zero to the
antidiagonal sums of partly padded tiles). Matmuls run in the input dtype (bf16/fp16 on a GPU), softmax and sums in
float32 (float64 for float64 inputs).
"""
import math

import torch
import torch.nn.functional as F

from . import common


def _check_stride(stride, block_size):
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1 or block_size % stride:
        raise ValueError(f"stride must be a positive int dividing block_size ({block_size}), "
                         f"got {stride!r}")


def xattention_scores(q, k, *, block_size=128, stride=8, scale=None):
    """Antidiagonal block scores [Hq, Nb, Nb] (float32, float64 for float64 inputs): for
    each head, query block m and key block n <= m, the softmax mass of m's strided rows that
    falls in n (each valid strided row sums to 1). Entries above the diagonal are 0."""
    n, hq, hkv, d, nb = common.check_inputs(q, k, block_size)
    _check_stride(stride, block_size)
    cdt = common.compute_dtype(q)
    scale = (1.0 / math.sqrt(d) if scale is None else float(scale)) / stride
    rows_pb = block_size // stride           # strided rows (and keys) per block
    ms = nb * rows_pb                        # strided rows of the padded sequence
    valid = common.ceil_div(n, stride)       # strided rows holding at least one real token
    pad = nb * block_size - n
    out = torch.zeros(hq, nb, nb, dtype=cdt, device=q.device)
    per_head = max(1, common.CHUNK_ELEMENTS // (ms * ms))
    for g, h0, h1 in common.kv_head_chunks(hq, hkv, per_head):
        hc = h1 - h0
        # Key tile j: tokens jS .. jS+S-1 in order; query tile i: the same tokens reversed.
        kr = F.pad(k[:, g], (0, 0, 0, pad)).reshape(ms, stride * d)
        qr = F.pad(q[:, h0:h1], (0, 0, 0, 0, 0, pad)).reshape(ms, stride, hc, d)
        qr = qr.flip(1).permute(2, 0, 1, 3).reshape(hc, ms, stride * d)
        # Query blocks per chunk, so that hc x rows x keys stays within CHUNK_ELEMENTS.
        blocks = max(1, common.CHUNK_ELEMENTS // (hc * rows_pb * ms))
        for m0 in range(0, nb, blocks):
            m1 = min(nb, m0 + blocks)
            i0, i1 = m0 * rows_pb, m1 * rows_pb
            s = torch.matmul(qr[:, i0:i1], kr[:i1].T).to(cdt) * scale   # [hc, rows, keys]
            i = torch.arange(i0, i1, device=q.device)[:, None]
            j = torch.arange(i1, device=q.device)[None, :]
            s.masked_fill_(j > i, -math.inf)
            # A key made only of padding (j >= valid) is causal only for a padding row
            # (i >= j), and those rows are zeroed: no separate key mask is needed.
            p = torch.softmax(s, dim=-1).masked_fill_(i >= valid, 0.0)
            out[h0:h1, m0:m1, :m1] = p.view(hc, m1 - m0, rows_pb, m1, rows_pb).sum((2, 4))
    return out


def xattention_estimate(q, k, *, block_size=128, stride=8, keep_sink=True, scale=None):
    """The threshold-independent part: a selection whose mask_at(tau) gives the mask."""
    scores = xattention_scores(q, k, block_size=block_size, stride=stride, scale=scale)
    nb = scores.shape[-1]
    crit = common.cumulative_critical(scores, common.causal(nb, q.device),
                                      common.forced(nb, keep_sink, q.device))
    return common.CumulativeSelection(crit, name="tau")


def xattention_mask(q, k, tau=0.9, *, block_size=128, stride=8, keep_sink=True, scale=None):
    """Block mask [Hq, Nb, Nb] bool. tau in [0, 1]: the share of each row's antidiagonal mass
    the kept blocks must reach (1 keeps the full causal mask)."""
    common.check_threshold("tau", tau)
    sel = xattention_estimate(q, k, block_size=block_size, stride=stride, keep_sink=keep_sink,
                              scale=scale)
    return sel.mask_at(tau)
