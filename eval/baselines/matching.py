"""Matched density: tune a selector's threshold (or window) so that its overall density is as
close as possible to a target, for example ProxyAttn's density on the same input."""
from typing import NamedTuple

import torch

from . import common
from .flexprefill import flexprefill_estimate
from .static import static_mask
from .xattention import xattention_estimate


class Match(NamedTuple):
    mask: torch.Tensor      # [Hq, Nb, Nb] bool
    density: float          # the achieved density
    parameter: float        # the threshold (gamma, tau) or, for "static", window_blocks


def _closest(kept_at, lo, hi, target, steps):
    """kept_at(x) is non-decreasing in x on [lo, hi]. Bisect to the step where it crosses target
    (steps iterations; integer bisection when lo and hi are ints); return the x on either side
    of the crossing whose count is closer to target (ties: the sparser one)."""
    integer = isinstance(lo, int)
    if kept_at(lo) >= target:
        return lo
    if kept_at(hi) <= target:
        return hi
    # invariant: kept_at(lo) < target < kept_at(hi)
    for _ in range(steps):
        if integer and hi - lo <= 1:
            break
        mid = (lo + hi) // 2 if integer else (lo + hi) / 2
        if kept_at(mid) < target:
            lo = mid
        else:
            hi = mid
    return lo if target - kept_at(lo) <= kept_at(hi) - target else hi


def match_density(selector, target_density, q, k, *, block_size=128, steps=64, **options):
    """Tune `selector` on (q, k) to the kept density closest to target_density.

    selector: "flexprefill" (tunes gamma), "xattention" (tunes tau), "static" (tunes
    window_blocks; option sink_blocks), or an estimate from flexprefill_estimate /
    xattention_estimate (anything with mask_at(threshold)). options go to the estimator
    (pattern, stride, keep_sink, ...). The expensive scores are computed once; bisection only
    re-applies the threshold. Returns Match(mask, density, parameter).
    """
    if isinstance(target_density, bool) or not isinstance(target_density, (int, float)) \
            or not 0.0 <= target_density <= 1.0:
        raise ValueError(f"target_density must be a number in [0, 1], got {target_density!r}")
    n, hq, _, _, nb = common.check_inputs(q, k, block_size)
    target = target_density * common.causal_blocks(nb, hq)   # in blocks
    if selector == "static":
        make = lambda w: static_mask(n, hq, w, block_size=block_size, device=q.device, **options)
        kept_at = lambda w: int(make(w).sum())
        w = _closest(kept_at, 1, nb, target, steps)
        mask = make(w)
        return Match(mask, common.density(mask), w)
    if selector == "flexprefill":
        sel = flexprefill_estimate(q, k, block_size=block_size, **options)
    elif selector == "xattention":
        sel = xattention_estimate(q, k, block_size=block_size, **options)
    elif hasattr(selector, "mask_at"):
        sel = selector
    else:
        raise ValueError(f"selector must be 'flexprefill', 'xattention', 'static' or an estimate "
                         f"with mask_at(), got {selector!r}")
    kept_at = lambda t: int(sel.mask_at(t).sum())
    t = _closest(kept_at, 0.0, 1.0, target, steps)
    mask = sel.mask_at(t)
    if mask.shape != (hq, nb, nb):
        raise ValueError(f"selector gives masks of shape {tuple(mask.shape)}, expected {(hq, nb, nb)}")
    return Match(mask, common.density(mask), t)
