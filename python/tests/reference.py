"""The tests' oracle: float64 numpy causal attention over packed sequences, optionally restricted
to a block mask in the library's CSR layout. Independent of the library's code paths."""
import numpy as np


def block_keep(row_offsets, col_indices, cu, seq, heads, head, block):
    """bool [nb, nb]: the key blocks row (query block, head) keeps in sequence `seq`."""
    row_offsets, col_indices = np.asarray(row_offsets), np.asarray(col_indices)
    first = sum(-(-(cu[s + 1] - cu[s]) // block) for s in range(seq))  # blocks of earlier sequences
    nb = -(-(cu[seq + 1] - cu[seq]) // block)
    keep = np.zeros((nb, nb), bool)
    for m in range(nb):
        r = (first + m) * heads + head
        keep[m, col_indices[row_offsets[r]:row_offsets[r + 1]]] = True
    return keep


def attention(q, k, v, cu, mask=None, block=128, scale=None):
    """q [total, hq, d], k, v [total, hkv, d]; mask = (row_offsets, col_indices) or None (dense).
    Returns out [total, hq, d] and lse [hq, total] in float64; rows keeping nothing give 0, -inf."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    total, hq, d = q.shape
    hkv = k.shape[1]
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    out, lse = np.zeros((total, hq, d)), np.full((hq, total), -np.inf)
    for s in range(len(cu) - 1):
        lo, hi = cu[s], cu[s + 1]
        tok = np.arange(hi - lo)
        causal = tok[None, :] <= tok[:, None]
        for h in range(hq):
            keep = causal
            if mask is not None:
                blocks = block_keep(*mask, cu, s, hq, h, block)
                keep = causal & blocks[tok[:, None] // block, tok[None, :] // block]
            kvh = h // (hq // hkv)
            scores = np.where(keep, q[lo:hi, h] @ k[lo:hi, kvh].T * scale, -np.inf)
            with np.errstate(invalid="ignore", divide="ignore"):  # rows that keep nothing
                mx = scores.max(axis=1, keepdims=True)
                p = np.exp(scores - mx)
                l = p.sum(axis=1, keepdims=True)
                out[lo:hi, h] = np.nan_to_num((p / l) @ v[lo:hi, kvh])
                lse[h, lo:hi] = (mx + np.log(l))[:, 0]
    return out, lse


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
