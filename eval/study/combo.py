"""The candidate fixes together: proxy_groups {1, 2} x budget_mode {row_ratio, last_row_count} x a
forced local window of {1, 4, 8} blocks, at matched density (bisection on gamma), on the block
masses cached by analyze.py. Prints a table and writes JSON.

    python3 eval/study/combo.py /tmp/study/passkey_16384_d0.50 /tmp/study/niah_multikey_16384_d0.50 \
        --out eval/study/results/combo.json
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") not in (HERE, ROOT)] + [ROOT, HERE]
import torch  # noqa: E402

import study_lib as S  # noqa: E402
from analyze import bisect_gamma, nforced_rows, window_pos  # noqa: E402

TARGETS = ("0.2", "0.3", "0.4", "own")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("capture_dirs", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    rows = []
    for d in args.capture_dirs:
        for layer in range(24):
            x = S.load_layer(d, layer)
            q, k, scale = x["q"], x["k"], x["scale"]
            n, hq, _ = q.shape
            nb = S.ceil_div(n, S.B)
            W, _ = S.cached_block_mass(d, layer, q, k, scale)
            a = S.stage2_mass(q, k, scale)
            own = float(S.row_counts(S.budget_blocks(a, 0.95), nb).sum()) / (hq * nb * (nb + 1) / 2)
            scores = {g: S.proxy_scores(q, k, scale, g, 4) for g in (1, 2)}
            for w in (1, 4, 8):
                nf = nforced_rows(nb, w)
                clamp = lambda c: torch.minimum(torch.maximum(c, nf[None]), torch.arange(1, nb + 1)[None])
                pos = {g: window_pos(scores[g], w) for g in (1, 2)}
                for mode in ("row_ratio", "last_row_count"):
                    for t in TARGETS:
                        D = own if t == "own" else float(t)
                        gamma = bisect_gamma(a, nb, D, clamp, mode=mode)
                        counts = clamp(S.row_counts(S.budget_blocks(a, gamma), nb, mode=mode))
                        for g in (1, 2):
                            mask = S.mask_from_counts(pos[g], S.head_groups(hq, k.shape[1], g), counts)
                            rows.append(dict(prompt=os.path.basename(d.rstrip("/")), layer=layer, groups=g,
                                             mode=mode, window=w, target=t, gamma=gamma,
                                             density=S.density(mask), recall=S.recall(mask, W, n)))
            # per-row count profile at density 0.3: the oracle's (true mass, per head and row)
            # against stage 2's two budget modes, as mean kept blocks per row over quarters of the rows
            nf = nforced_rows(nb, 1)
            clamp = lambda c: torch.minimum(torch.maximum(c, nf[None]), torch.arange(1, nb + 1)[None])
            prof = {}
            for mode in ("row_ratio", "last_row_count"):
                c = clamp(S.row_counts(S.budget_blocks(a, bisect_gamma(a, nb, 0.3, clamp, mode=mode)), nb, mode=mode))
                prof[mode] = c
            opos = S.rank_positions(W.float())
            prof["oracle"] = S.global_counts(opos, torch.arange(hq), W, int(prof["row_ratio"].sum()))
            quarters = {name: [round(float(c[:, i * nb // 4:(i + 1) * nb // 4].double().mean()), 2) for i in range(4)]
                        for name, c in prof.items()}
            rows.append(dict(prompt=os.path.basename(d.rstrip("/")), layer=layer, profile=quarters))
            print(d, layer, quarters, flush=True)
    with open(args.out, "w") as f:
        json.dump(rows, f)
    print("\n| proxy_groups | budget_mode | window | " + " | ".join(
        "recall at %s (mean / min over 48 layer-prompts)" % t for t in TARGETS) + " |")
    print("|---|---|---|" + "---|" * len(TARGETS))
    for g in (1, 2):
        for mode in ("row_ratio", "last_row_count"):
            for w in (1, 4, 8):
                cells = []
                for t in TARGETS:
                    rs = [r["recall"] for r in rows if "profile" not in r and (r["groups"], r["mode"], r["window"], r["target"]) == (g, mode, w, t)]
                    cells.append("%.3f / %.3f" % (sum(rs) / len(rs), min(rs)))
                print("| %d | %s | %d | %s |" % (g, mode, w, " | ".join(cells)))
    print("\n| row quarter | " + " | ".join(["q1 (rows 0-31)", "q2", "q3", "q4 (rows 96-127)"]) + " |")
    print("|---|---|---|---|---|")
    prof = [r["profile"] for r in rows if "profile" in r]
    for name in ("oracle", "row_ratio", "last_row_count"):
        print("| %s | %s |" % (name, " | ".join("%.1f" % (sum(p[name][i] for p in prof) / len(prof)) for i in range(4))))


if __name__ == "__main__":
    main()
