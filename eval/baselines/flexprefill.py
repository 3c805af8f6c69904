"""FlexPrefill-style selector (Lai et al. 2025, "FlexPrefill: A Context-Aware Sparse Attention
Mechanism for Efficient Long-Sequence Inference").

Every pattern starts from the last query block (the last min(B, N) queries) of each head:
P = causal softmax(scale * Q_last K^T) over all N keys. Patterns (argument `pattern`):

- "last_block" (default): the pooled-block estimator of this project's comparison plan.
  a[n] = the mass of P in key block n; every query block row m uses the same a[0..m],
  renormalised over its eligible blocks, and keeps the diagonal and the sink, then the
  blocks of largest a until the kept mass reaches gamma of the row's mass. This is a
  simplification of the paper: it has no per-row query information and no pattern switch.
- "vertical_slash": the paper's vertical-slash pattern. vertical[j] = mean over the last
  queries of P[., j]; slash[d] = mean of the probability at distance d = query - key.
  Each is pooled per block (key block n; distance offset o = m - n covering distances
  [oB, oB + B)). The number of columns kept is the number of tokens whose sorted vertical
  mass reaches gamma, // B + 1 (likewise for offsets), at least ceil(min_budget_tokens / B).
  The kept columns are the best pooled ones (the sink column first), the kept offsets the
  best pooled ones (offset 0, the diagonal, first); the mask is their causal union.
- "query_aware": the paper's query-aware pattern. Block means of q and k give
  A = causal softmax(scale * qbar kbar^T) [Nb, Nb] per head; the blocks of largest A over
  the whole matrix are kept until their mass reaches gamma of the total (Nb, one per row),
  together with the vertical-slash blocks at the minimum budget (sink column, diagonal).
- "auto": the paper's switch: a head is query-aware when the square-root Jensen-Shannon
  divergence between softmax(scale * mean(Q_last) kbar^T) over all blocks and the pooled
  vertical mass is below tau, else vertical-slash.

Ties are broken towards the lower block index everywhere. Diagonal and sink (when keep_sink)
are always kept. gamma = 1 gives the full causal mask. Departures from the public code: the
JS divergence treats 0 log 0 as 0 (the public code gives NaN, hence vertical-slash, there);
the token-to-block count uses block_size where the public code has a literal 128; the
cumulative rules keep the shortest prefix reaching gamma.
"""
import math

import torch
import torch.nn.functional as F

from . import common

PATTERNS = ("last_block", "vertical_slash", "query_aware", "auto")


def _last_block_probs(q, k, g, h0, h1, bq, scale, cdt):
    """Causal softmax of the last bq queries of q heads [h0, h1) (kv head g): [hc, bq, N]."""
    n = q.shape[0]
    ql = q[n - bq:, h0:h1].to(cdt).permute(1, 0, 2)                  # [hc, bq, D]
    s = torch.matmul(ql, k[:, g].to(cdt).T) * scale                   # [hc, bq, N]
    pos = torch.arange(n - bq, n, device=q.device)[:, None]
    s.masked_fill_(torch.arange(n, device=q.device)[None, :] > pos, -math.inf)
    return torch.softmax(s, dim=-1)


def _block_sum(x, nb, block_size):
    """Sum the last dimension (tokens) per block of block_size, zero-padding the tail."""
    pad = nb * block_size - x.shape[-1]
    return F.pad(x, (0, pad)).view(*x.shape[:-1], nb, block_size).sum(-1)


def _block_mean(x, nb, block_size, dtype):
    """[N, H, D] -> [Nb, H, D] in dtype: the mean over each block's real tokens, accumulated in
    dtype without a converted copy of x."""
    n, full = x.shape[0], x.shape[0] // block_size
    sums = torch.empty(nb, *x.shape[1:], dtype=dtype, device=x.device)
    sums[:full] = x[:full * block_size].view(full, block_size, *x.shape[1:]).sum(1, dtype=dtype)
    if full < nb:  # a partial last block
        sums[full] = x[full * block_size:].sum(0, dtype=dtype)
    counts = torch.full((nb,), float(block_size), dtype=dtype, device=x.device)
    counts[-1] = n - (nb - 1) * block_size
    return sums / counts[:, None, None]


def _ranks(scores, first):
    """Rank of every entry of scores [H, L] in decreasing order (ties: lower index first),
    with position `first` placed ahead of all (None: no such position)."""
    key = scores.clone()
    if first is not None:
        key[:, first] = math.inf
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return ranks


def _cover_ratios(x):
    """x [H, L] non-negative: sorted decreasingly, the mass before each position over the
    total. The shortest prefix reaching t of the total has (ratios < t).sum() entries."""
    vals = torch.sort(x, dim=-1, descending=True).values
    run = vals.cumsum(-1)
    total = run[:, -1:]
    before = F.pad(run[:, :-1], (1, 0))
    return torch.where(total > 0, before / total.clamp_min(torch.finfo(x.dtype).tiny), 1.0)


def _js_sqrt(p, r):
    """Square-root Jensen-Shannon divergence per row, with 0 log 0 = 0."""
    m = (p + r) / 2
    kl = lambda a: torch.where(a > 0, a * (a / m).log(), 0.0).sum(-1)
    return (0.5 * kl(p) + 0.5 * kl(r)).clamp_min(0).sqrt()


class FlexPrefillSelection:
    """The threshold-independent part of the FlexPrefill-style estimate; mask_at(gamma)."""

    def __init__(self, pattern, nb, block_size, min_blocks, keep_sink, device):
        self.pattern, self.nb, self.block_size = pattern, nb, block_size
        self.min_blocks, self.keep_sink = min_blocks, keep_sink
        self.causal = common.causal(nb, device)
        self.forced = common.forced(nb, keep_sink, device)
        # offset[m, n] = m - n on the causal part (used to look up the kept slash offsets)
        ar = torch.arange(nb, device=device)
        self.offset = (ar[:, None] - ar[None, :]).clamp_min(0)
        self.crit = None           # [Hq, Nb, Nb] for last_block / query_aware heads
        self.query_aware = None    # [Hq] bool: heads on the query-aware rule
        self.v_cover = self.s_cover = self.v_rank = self.s_rank = None

    def _vertical_slash(self, t):
        """[Hq, Nb, Nb]: the vertical-slash mask at threshold t."""
        nb, b = self.nb, self.block_size

        def count(cover):
            if t >= 1.0:
                return torch.full(cover.shape[:1], nb, device=cover.device)
            tokens = (cover < t).sum(-1)
            return (tokens // b + 1).clamp(min=self.min_blocks, max=nb)

        cols = self.v_rank < count(self.v_cover)[:, None]                 # [Hq, Nb]
        offs = self.s_rank < count(self.s_cover)[:, None]                 # [Hq, Nb]
        by_offset = offs[:, self.offset]                                  # [Hq, Nb, Nb]
        return (cols[:, None, :] | by_offset | self.forced) & self.causal

    def _vertical_slash_min(self):
        """[Hq, Nb, Nb]: the vertical-slash blocks at the minimum budget."""
        cols = self.v_rank < self.min_blocks
        offs = self.s_rank < self.min_blocks
        return (cols[:, None, :] | offs[:, self.offset] | self.forced) & self.causal

    def mask_at(self, gamma):
        t = common.check_threshold("gamma", gamma)
        limit = math.inf if t >= 1.0 else t
        if self.pattern == "last_block":
            return self.crit < limit
        if self.pattern == "vertical_slash":
            return self._vertical_slash(t)
        aware = (self.crit < limit) | self._vertical_slash_min()
        if self.pattern == "query_aware":
            return aware
        return torch.where(self.query_aware[:, None, None], aware, self._vertical_slash(t))


def flexprefill_estimate(q, k, *, block_size=128, pattern="last_block", tau=0.1,
                         min_budget_tokens=0, keep_sink=True, scale=None):
    """The threshold-independent part; returns a selection whose mask_at(gamma) is the mask."""
    n, hq, hkv, d, nb = common.check_inputs(q, k, block_size)
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    common.check_threshold("tau", tau)
    if not isinstance(min_budget_tokens, int) or min_budget_tokens < 0:
        raise ValueError(f"min_budget_tokens must be an int >= 0, got {min_budget_tokens!r}")
    cdt = common.compute_dtype(q)
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    bq = min(block_size, n)
    dev = q.device
    sel = FlexPrefillSelection(pattern, nb, block_size,
                               max(1, common.ceil_div(min_budget_tokens, block_size)), keep_sink, dev)
    need_vs = pattern != "last_block"
    colmass = torch.zeros(hq, nb, dtype=cdt, device=dev)     # pooled vertical (mean) mass
    if need_vs:
        vertical = torch.zeros(hq, n, dtype=cdt, device=dev)
        slash = torch.zeros(hq, n, dtype=cdt, device=dev)
        # Query i of the last block is token n - bq + i; on the key-reversed row, distance
        # dist sits at column bq - 1 - i + dist (past the row's end: key before token 0).
        col = (torch.arange(bq, device=dev)[:, None].neg() + (bq - 1)
               + torch.arange(n, device=dev)[None, :])
        inside = col < n
        col = col.clamp(max=n - 1)
    for g, h0, h1 in common.kv_head_chunks(hq, hkv, max(1, common.CHUNK_ELEMENTS // (2 * bq * n))):
        p = _last_block_probs(q, k, g, h0, h1, bq, scale, cdt)          # [hc, bq, N]
        v = p.mean(1)
        colmass[h0:h1] = _block_sum(v, nb, block_size)
        if need_vs:
            vertical[h0:h1] = v
            by_dist = p.flip(-1).gather(-1, col.expand(h1 - h0, bq, n)) * inside
            slash[h0:h1] = by_dist.mean(1)
    if pattern == "last_block":
        scores = colmass[:, None, :].expand(hq, nb, nb)
        sel.crit = common.cumulative_critical(scores, sel.causal, sel.forced)
        return sel
    sel.v_cover, sel.s_cover = _cover_ratios(vertical), _cover_ratios(slash)
    sel.v_rank = _ranks(colmass, 0 if keep_sink else None)
    sel.s_rank = _ranks(_block_sum(slash, nb, block_size), 0)
    if pattern == "vertical_slash":
        return sel
    # Query-aware estimate from block means, and the pattern switch.
    r = hq // hkv
    kbar = _block_mean(k, nb, block_size, cdt)                         # [Nb, Hkv, D]
    qbar = _block_mean(q, nb, block_size, cdt)                         # [Nb, Hq, D]
    kbar_q = kbar[:, torch.arange(hq, device=dev) // r]                 # [Nb, Hq, D]
    a = torch.einsum("mhd,nhd->hmn", qbar, kbar_q) * scale
    a = torch.softmax(a.masked_fill(~sel.causal, -math.inf), dim=-1)   # [Hq, Nb, Nb]
    flat_causal = sel.causal.reshape(1, nb * nb)
    crit = common.cumulative_critical(a.reshape(hq, 1, nb * nb), flat_causal)
    sel.crit = crit.view(hq, nb, nb).masked_fill(sel.forced, -math.inf)
    qlast = q[n - bq:].mean(0, dtype=cdt)                               # [Hq, D]
    est = torch.softmax(torch.einsum("hd,nhd->hn", qlast, kbar_q) * scale, dim=-1)
    sel.query_aware = _js_sqrt(est, colmass) < tau
    return sel


def flexprefill_mask(q, k, gamma=0.95, *, block_size=128, pattern="last_block", tau=0.1,
                     min_budget_tokens=0, keep_sink=True, scale=None):
    """Block mask [Hq, Nb, Nb] bool. gamma in [0, 1]: the attention mass to cover (1 keeps the
    full causal mask). See the module docstring for the patterns."""
    common.check_threshold("gamma", gamma)
    sel = flexprefill_estimate(q, k, block_size=block_size, pattern=pattern, tau=tau,
                               min_budget_tokens=min_budget_tokens, keep_sink=keep_sink, scale=scale)
    return sel.mask_at(gamma)
