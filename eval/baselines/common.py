"""Pieces shared by the baseline selectors: input checks, forced blocks, the cumulative
threshold rule, density and the library's CSR block-mask layout.

A mask is a bool tensor [Hq, Nb, Nb]: mask[h, m, n] says whether head h, query block m
computes key block n. Every mask produced here is causal (n <= m) and keeps the diagonal.
"""
import math
from numbers import Real

import torch

# Largest temporary score tensor (in elements) that a selector builds at once; heads and query
# blocks are split so that no chunk exceeds it. 2^27 fp32 values are 512 MiB.
CHUNK_ELEMENTS = 1 << 27


def ceil_div(a, b):
    return -(-a // b)


def _shape(x):
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def check_block_size(block_size):
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")


def check_inputs(q, k, block_size):
    """Check q [N, Hq, D] and k [N, Hkv, D] (Hq a multiple of Hkv); return (N, Hq, Hkv, D, Nb)."""
    if not isinstance(q, torch.Tensor) or q.dim() != 3:
        raise ValueError(f"q must be a tensor [N, Hq, D], got {_shape(q)}")
    if not isinstance(k, torch.Tensor) or k.dim() != 3:
        raise ValueError(f"k must be a tensor [N, Hkv, D], got {_shape(k)}")
    n, hq, d = q.shape
    if n < 1 or hq < 1 or d < 1:
        raise ValueError(f"q must have N, Hq, D >= 1, got shape {tuple(q.shape)}")
    if k.shape[0] != n or k.shape[2] != d or k.shape[1] < 1:
        raise ValueError(f"k must be [N={n}, Hkv, D={d}] to match q, got shape {tuple(k.shape)}")
    hkv = k.shape[1]
    if hq % hkv:
        raise ValueError(f"k heads ({hkv}) must divide q heads ({hq})")
    if not q.is_floating_point() or not k.is_floating_point():
        raise ValueError(f"q and k must be floating point, got q {q.dtype}, k {k.dtype}")
    if k.device != q.device:
        raise ValueError(f"k must be on q's device {q.device}, got {k.device}")
    check_block_size(block_size)
    return n, hq, hkv, d, ceil_div(n, block_size)


def check_threshold(name, value):
    if not isinstance(value, Real) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_mask(mask):
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 3 \
            or mask.shape[1] != mask.shape[2]:
        what = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else _shape(mask)
        raise ValueError(f"mask must be a bool tensor [Hq, Nb, Nb], got {what}")


def compute_dtype(x):
    """Scores are kept in float64 for float64 inputs (the tests' exact path), else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def causal(nb, device):
    return torch.ones(nb, nb, dtype=torch.bool, device=device).tril_()


def forced(nb, keep_sink, device):
    """[Nb, Nb]: the blocks kept whatever the scores say: the diagonal, and block 0 (the sink)."""
    f = torch.eye(nb, dtype=torch.bool, device=device)
    if keep_sink:
        f[:, 0] = True
    return f


def kv_head_chunks(hq, hkv, max_heads):
    """(kv head, first q head, end q head): runs of at most max_heads q heads of one kv head."""
    r = hq // hkv
    step = max(1, min(r, max_heads))
    for g in range(hkv):
        for h0 in range(g * r, (g + 1) * r, step):
            yield g, h0, min(h0 + step, (g + 1) * r)


def cumulative_critical(scores, eligible, forced_blocks=None):
    """The cumulative-mass rule, as a per-block critical threshold.

    scores [H, R, C] (non-negative), eligible and forced_blocks [R, C] bool (or None). In each
    row the forced blocks come first (lower index first), then the other eligible blocks by
    decreasing score (ties: lower index first). At threshold t < 1 a row keeps the shortest
    prefix of that order whose mass reaches t times the row's eligible mass: a block is kept
    iff the mass before it, divided by the row's mass, is below t. That ratio is returned
    (forced: -inf, not eligible: +inf, rows of zero mass: 1, so only t >= 1 adds blocks), so
    the mask at t is simply `crit < t`. Sorting is done a few heads at a time.
    """
    h, r, c = scores.shape
    key_base = torch.where(eligible, 0.0, -math.inf).to(scores.dtype)
    if forced_blocks is not None:
        key_base = key_base.masked_fill(forced_blocks, math.inf)
    crit = torch.empty_like(scores)
    step = max(1, CHUNK_ELEMENTS // (8 * r * c))
    for h0 in range(0, h, step):
        s = scores[h0:h0 + step].masked_fill(~eligible, 0.0)
        key = torch.where(key_base == 0.0, s, key_base)  # forced +inf, ineligible -inf
        order = torch.sort(key, dim=-1, descending=True, stable=True).indices
        vals = s.gather(-1, order)
        run = vals.cumsum(-1)
        before = torch.nn.functional.pad(run[..., :-1], (1, 0))  # mass before each position
        total = run[..., -1:]
        ratio = torch.where(total > 0, before / total.clamp_min(torch.finfo(s.dtype).tiny), 1.0)
        crit[h0:h0 + step].scatter_(-1, order, ratio)
    crit.masked_fill_(~eligible, math.inf)
    if forced_blocks is not None:
        crit.masked_fill_(forced_blocks & eligible, -math.inf)
    return crit


class CumulativeSelection:
    """A threshold-independent estimate: crit [Hq, Nb, Nb] from cumulative_critical.
    mask_at(t) applies a threshold; t >= 1 keeps every causal block."""

    def __init__(self, crit, name="threshold"):
        self.crit = crit
        self.name = name

    def mask_at(self, threshold):
        t = check_threshold(self.name, threshold)
        return self.crit < (math.inf if t >= 1.0 else t)


def causal_blocks(num_blocks, q_heads):
    """Blocks of the causal region, summed over heads: the denominator of density."""
    return q_heads * num_blocks * (num_blocks + 1) // 2


def density(mask):
    """Kept blocks / causal blocks over all heads, as the library's HostEstimate::density():
    per head the causal region holds Nb (Nb + 1) / 2 blocks; blocks above the diagonal
    are not counted."""
    check_mask(mask)
    hq, nb, _ = mask.shape
    kept = int((mask & causal(nb, mask.device)).sum())
    return kept / causal_blocks(nb, hq)


def to_csr(mask):
    """The library's CSR layout: rows ordered query block major, head minor (row = m * Hq + h);
    returns (row_offsets int64 [Nb * Hq + 1], col_indices int32, ascending within a row), on
    the mask's device."""
    check_mask(mask)
    hq, nb, _ = mask.shape
    rows = mask.permute(1, 0, 2).reshape(nb * hq, nb)
    offsets = torch.zeros(nb * hq + 1, dtype=torch.int64, device=mask.device)
    offsets[1:] = rows.sum(-1).cumsum(0)
    cols = rows.nonzero()[:, 1].to(torch.int32).contiguous()  # row-major: ascending per row
    return offsets, cols


def from_csr(row_offsets, col_indices, q_heads, num_blocks):
    """Inverse of to_csr: the bool mask [q_heads, num_blocks, num_blocks]."""
    rows = q_heads * num_blocks
    if row_offsets.dim() != 1 or row_offsets.numel() != rows + 1:
        raise ValueError(f"row_offsets must have {rows + 1} entries, got {tuple(row_offsets.shape)}")
    if col_indices.dim() != 1 or col_indices.numel() != int(row_offsets[-1]):
        raise ValueError(f"col_indices must have row_offsets[-1] = {int(row_offsets[-1])} entries, "
                         f"got {tuple(col_indices.shape)}")
    counts = (row_offsets[1:] - row_offsets[:-1]).long()
    row_of = torch.repeat_interleave(torch.arange(rows, device=row_offsets.device), counts)
    flat = torch.zeros(rows, num_blocks, dtype=torch.bool, device=row_offsets.device)
    flat[row_of, col_indices.long()] = True
    return flat.view(num_blocks, q_heads, num_blocks).permute(1, 0, 2).contiguous()
