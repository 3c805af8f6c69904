"""Recall at matched density, per layer, for ProxyAttn variants, oracles and the XAttention-style
baseline, on the activations captured by capture.py. Writes one JSON per prompt.

    python3 eval/study/analyze.py /tmp/study/passkey_16384_d0.50 --out eval/study/results/passkey.json

Every ProxyAttn variant (Python mirror of stages 1-3, checked by check_mirror.py) is brought to
the target density by bisection on gamma; since the density depends only on the per-row counts,
variants that differ only in ranking share the counts and have exactly the same density.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") not in (HERE, ROOT)] + [ROOT, HERE]
import torch  # noqa: E402

import study_lib as S  # noqa: E402
from eval.baselines import xattention_estimate, match_density  # noqa: E402

TARGETS = (0.2, 0.3, 0.4)
# ranking variants: name -> (groups, stride, pool); groups 14 = one proxy per q head (diagnostic)
PROXIES = {
    "p1_s4": (1, 4, "max"), "p2_s4": (2, 4, "max"),
    "p1_s1": (1, 1, "max"), "p1_s2": (1, 2, "max"), "p1_s8": (1, 8, "max"),
    "p2_s1": (2, 1, "max"), "p2_s2": (2, 2, "max"), "p2_s8": (2, 8, "max"),
    "p14_s4": (14, 4, "max"),
    "p1_s4_sum": (1, 4, "sum"), "p2_s4_sum": (2, 4, "sum"),
}
WINDOWS = (1, 4, 8)   # forced local window in blocks (1 = the diagonal only, DESIGN's default)


def counts_at(a, gamma, nb, nforced_fn, mode="row_ratio"):
    return nforced_fn(S.row_counts(S.budget_blocks(a, gamma), nb, mode=mode))


def bisect_gamma(a, nb, target, clamp, mode="row_ratio", steps=40):
    """gamma whose counts give the density closest to target (counts non-decreasing in gamma)."""
    hq = a.shape[0]
    total = hq * nb * (nb + 1) / 2

    def dens(g):
        return float(clamp(S.row_counts(S.budget_blocks(a, g), nb, mode=mode)).sum()) / total
    lo, hi = 0.0, 1.0
    if dens(lo) >= target:
        return lo
    for _ in range(steps):
        mid = (lo + hi) / 2
        if dens(mid) < target:
            lo = mid
        else:
            hi = mid
    return lo if target - dens(lo) <= dens(hi) - target else hi


def window_pos(scores, w):
    """rank positions with forced = sink + the w last blocks of each row (w = 1: the diagonal)."""
    pos = S.rank_positions(scores)
    if w == 1:
        return pos
    g, nb, _ = scores.shape
    causal = torch.ones(nb, nb, dtype=torch.bool).tril_()
    m = torch.arange(nb)[:, None]
    n = torch.arange(nb)[None, :]
    forced = causal & ((n == 0) | (n > m - w))
    key = scores.double().masked_fill(~causal, -1e300)
    fk = 1e30 * (2.0 - torch.arange(nb, dtype=torch.float64) / nb)
    key = torch.where(forced, fk.expand(nb, nb), key)
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices
    pos = torch.empty_like(order)
    pos.scatter_(-1, order, torch.arange(nb).expand_as(order).contiguous())
    return pos.masked_fill_(~causal, nb)


def nforced_rows(nb, w):
    """forced blocks per row with a local window of w blocks: the sink and blocks m-w+1 .. m."""
    m = torch.arange(nb)
    return torch.minimum(m + 1, torch.full_like(m, w)) + (m >= w).long()


def analyze_layer(d, layer, targets):
    t0 = time.time()
    x = S.load_layer(d, layer)
    q, k = x["q"], x["k"]
    scale = x["scale"] or q.shape[-1] ** -0.5
    n, hq, _ = q.shape
    hkv = k.shape[1]
    nb = S.ceil_div(n, S.B)
    W, lse = S.cached_block_mass(d, layer, q, k, scale)
    t1 = time.time()
    a = S.stage2_mass(q, k, scale)
    scores = {name: S.proxy_scores(q, k, scale, g, s, pool) for name, (g, s, pool) in PROXIES.items()}
    groups = {name: g for name, (g, s, pool) in PROXIES.items()}
    # rankings by the true mass: per head (oracle), averaged over the heads of 1 or 2 groups
    for g in (1, 2):
        hg = S.head_groups(hq, hkv, g)
        scores["Wmean_p%d" % g] = torch.stack([W[hg == j].mean(0) for j in range(g)]).float()
        groups["Wmean_p%d" % g] = g
    scores["oracle"] = W.float()
    groups["oracle"] = hq
    xsel = xattention_estimate(q, k, block_size=S.B, stride=8)
    t2 = time.time()

    res = {"layer": layer, "n": n, "diag": diagnostics(W, n, a)}
    own_counts = S.row_counts(S.budget_blocks(a, 0.95), nb)
    own = float(own_counts.sum()) / (hq * nb * (nb + 1) / 2)
    res["own_density_g095"] = own
    res["targets"] = {}
    pos_cache = {}
    for target in list(targets) + ["own"]:
        D = own if target == "own" else target
        out = {}
        total = hq * nb * (nb + 1) / 2
        for w in WINDOWS:
            nf = nforced_rows(nb, w)
            clamp = lambda c: torch.minimum(torch.maximum(c, nf[None]), torch.arange(1, nb + 1)[None])
            budgets = {"stage2": clamp(S.row_counts(S.budget_blocks(a, bisect_gamma(a, nb, D, clamp)), nb))}
            if w == 1:
                budgets["lastrow"] = clamp(S.row_counts(S.budget_blocks(
                    a, bisect_gamma(a, nb, D, clamp, mode="last_row_count")), nb, mode="last_row_count"))
                # the same ratio for every head (k_h equal): does the per-head budget help?
                lo, hi = 0, nb
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    c = clamp(S.row_counts(torch.full((hq,), mid), nb))
                    lo, hi = (mid, hi) if float(c.sum()) / total < D else (lo, mid)
                budgets["uniform"] = min((clamp(S.row_counts(torch.full((hq,), v), nb)) for v in (lo, hi)),
                                         key=lambda c: abs(float(c.sum()) / total - D))
            names = list(scores) if w == 1 else ["p1_s4", "p2_s4", "oracle"]
            for name in names:
                key = (name, w)
                if key not in pos_cache:
                    pos_cache[key] = window_pos(scores[name], w)
                pos = pos_cache[key]
                hg = torch.arange(hq) if groups[name] == hq else S.head_groups(hq, hkv, groups[name])
                for bname, counts in budgets.items():
                    if bname != "stage2" and name not in ("p1_s4", "p2_s4", "oracle"):
                        continue
                    mask = S.mask_from_counts(pos, hg, counts)
                    tag = "%s|%s|w%d" % (name, bname, w)
                    out[tag] = {"density": S.density(mask), "recall": S.recall(mask, W, n),
                                "head_recall": [round(float(v), 4) for v in S.recall_per_head(mask, W, n)]}
                # the oracle budget for this ranking: best per-(head, row) counts, same total
                if w == 1 and name in ("p1_s4", "p2_s4", "p14_s4", "Wmean_p1", "Wmean_p2", "oracle"):
                    target_blocks = int(round(float(budgets["stage2"].sum())))
                    oc = S.global_counts(pos, hg, W, target_blocks)
                    mask = S.mask_from_counts(pos, hg, oc)
                    out["%s|oraclebudget|w1" % name] = {
                        "density": S.density(mask), "recall": S.recall(mask, W, n),
                        "head_recall": [round(float(v), 4) for v in S.recall_per_head(mask, W, n)],
                        "head_density": [round(float(v), 4) for v in oc.sum(-1) / (nb * (nb + 1) / 2)]}
        m = match_density(xsel, D, q, k, block_size=S.B)
        out["xattention"] = {"density": m.density, "recall": S.recall(m.mask, W, n),
                             "head_recall": [round(float(v), 4) for v in S.recall_per_head(m.mask, W, n)],
                             "head_density": [round(float(v), 4) for v in
                                              m.mask.sum((1, 2)).double() / (nb * (nb + 1) / 2)]}
        out["stage2_head_density"] = [round(float(v), 4) for v in
                                      budgets_head_density(a, D, nb)]
        res["targets"][str(target)] = out
    print("layer %2d: block mass %.0f s, scores %.0f s, masks %.0f s; own density %.3f; at 0.3: "
          "p1 %.3f p2 %.3f xattn %.3f oracle %.3f" % (
              layer, t1 - t0, t2 - t1, time.time() - t2, own,
              res["targets"]["0.3"]["p1_s4|stage2|w1"]["recall"], res["targets"]["0.3"]["p2_s4|stage2|w1"]["recall"],
              res["targets"]["0.3"]["xattention"]["recall"], res["targets"]["0.3"]["oracle|oraclebudget|w1"]["recall"]),
          flush=True)
    return res


def budgets_head_density(a, D, nb):
    nf = nforced_rows(nb, 1)
    clamp = lambda c: torch.minimum(torch.maximum(c, nf[None]), torch.arange(1, nb + 1)[None])
    c = clamp(S.row_counts(S.budget_blocks(a, bisect_gamma(a, nb, D, clamp)), nb))
    return c.sum(-1).double() / (nb * (nb + 1) / 2)


def diagnostics(W, n, a):
    """Where the dense mass lies (per head): sink block, diagonal block, last 4 / 8 blocks;
    head agreement: the recall each head gets from the mean-of-group true-mass ranking is in
    the main table (Wmean_p*)."""
    hq, nb, _ = W.shape
    m = torch.arange(nb)[:, None]
    nn = torch.arange(nb)[None, :]
    share = lambda sel: [round(float(v), 4) for v in (W * sel).sum((1, 2)) / n]
    # true per-head block mass averaged over all rows vs the stage-2 (last 128 queries) estimate
    return {
        "sink": share(nn == 0), "diag": share(nn == m), "last4": share((nn <= m) & (nn > m - 4)),
        "last8": share((nn <= m) & (nn > m - 8)),
        "stage2_sink": [round(float(v), 4) for v in a[:, 0]],
        "stage2_last4": [round(float(v), 4) for v in a[:, -4:].sum(-1)],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture_dir")
    ap.add_argument("--layers", type=int, nargs="*")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    layers = args.layers if args.layers else sorted(
        int(f[1:3]) for f in os.listdir(args.capture_dir) if f.startswith("L") and f.endswith(".pt"))
    results = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            results = [r for r in json.load(f)["layers"] if r["layer"] not in layers]
    for layer in layers:
        results.append(analyze_layer(args.capture_dir, layer, TARGETS))
        results.sort(key=lambda r: r["layer"])
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"capture": os.path.basename(args.capture_dir.rstrip("/")), "layers": results}, f)


if __name__ == "__main__":
    main()
