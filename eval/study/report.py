"""Prints the markdown tables of eval/study/README.md from the JSON files of analyze.py.

    python3 eval/study/report.py eval/study/results/*.json
"""
import json
import sys

SHORT = {"passkey_16384_d0.50": "passkey", "niah_multikey_16384_d0.50": "multikey"}

MAIN = [  # (label, key)
    ("PA p1 s4 (default)", "p1_s4|stage2|w1"),
    ("PA p2 s4", "p2_s4|stage2|w1"),
    ("XAttention-style", "xattention"),
]
VARIANTS = [
    ("PA p1 s4 (default)", "p1_s4|stage2|w1"),
    ("PA p1 s1", "p1_s1|stage2|w1"), ("PA p1 s2", "p1_s2|stage2|w1"), ("PA p1 s8", "p1_s8|stage2|w1"),
    ("PA p2 s4", "p2_s4|stage2|w1"),
    ("PA p2 s1", "p2_s1|stage2|w1"), ("PA p2 s2", "p2_s2|stage2|w1"), ("PA p2 s8", "p2_s8|stage2|w1"),
    ("PA p1 s4, sum-pool", "p1_s4_sum|stage2|w1"), ("PA p2 s4, sum-pool", "p2_s4_sum|stage2|w1"),
    ("PA p1 s4, last_row_count", "p1_s4|lastrow|w1"), ("PA p2 s4, last_row_count", "p2_s4|lastrow|w1"),
    ("PA p1 s4, same k_h all heads", "p1_s4|uniform|w1"), ("PA p2 s4, same k_h all heads", "p2_s4|uniform|w1"),
    ("PA p1 s4, window 4", "p1_s4|stage2|w4"), ("PA p1 s4, window 8", "p1_s4|stage2|w8"),
    ("PA p2 s4, window 4", "p2_s4|stage2|w4"), ("PA p2 s4, window 8", "p2_s4|stage2|w8"),
    ("proxy per q head (p14) s4 [diag.]", "p14_s4|stage2|w1"),
    ("true mass, mean of 1 group [diag.]", "Wmean_p1|stage2|w1"),
    ("true mass, mean per kv group [diag.]", "Wmean_p2|stage2|w1"),
    ("oracle ranking, stage-2 counts", "oracle|stage2|w1"),
    ("oracle ranking, last_row_count", "oracle|lastrow|w1"),
    ("oracle ranking, window 8", "oracle|stage2|w8"),
    ("p1 ranking, oracle counts", "p1_s4|oraclebudget|w1"),
    ("p2 ranking, oracle counts", "p2_s4|oraclebudget|w1"),
    ("p14 ranking, oracle counts", "p14_s4|oraclebudget|w1"),
    ("oracle (ranking and counts)", "oracle|oraclebudget|w1"),
    ("XAttention-style (stride 8, tau)", "xattention"),
]


def load(paths):
    runs = {}
    for p in paths:
        with open(p) as f:
            d = json.load(f)
        runs[SHORT.get(d["capture"], d["capture"])] = d["layers"]
    return runs


def mean(xs):
    return sum(xs) / len(xs)


def variant_table(runs, target):
    names = list(runs)
    print("\n#### Target density %s\n" % target)
    hdr = " | ".join("%s mean | %s min (layer)" % (n, n) for n in names)
    print("| variant | density | " + hdr + " | mean of both |")
    print("|---|---|" + "---|---|" * len(names) + "---|")
    for label, key in VARIANTS:
        cells, allr, dens = [], [], []
        for n in names:
            rs = [(L["targets"][target][key]["recall"], L["layer"]) for L in runs[n]]
            dens += [L["targets"][target][key]["density"] for L in runs[n]]
            lo = min(rs)
            cells.append("%.3f | %.3f (%d)" % (mean([r for r, _ in rs]), lo[0], lo[1]))
            allr += [r for r, _ in rs]
        print("| %s | %.3f | %s | %.3f |" % (label, mean(dens), " | ".join(cells), mean(allr)))


def layer_table(runs, target, cols):
    names = list(runs)
    print("\n#### Per layer, target density %s (recall; mean of the %d prompts, then each)\n" % (target, len(names)))
    print("| layer | density | " + " | ".join(l for l, _ in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    nl = len(runs[names[0]])
    for i in range(nl):
        layer = runs[names[0]][i]["layer"]
        dens = mean([runs[n][i]["targets"][target][cols[0][1]]["density"] for n in names])
        cells = []
        for _, key in cols:
            vals = [runs[n][i]["targets"][target][key]["recall"] for n in names]
            cells.append("%.3f (%s)" % (mean(vals), "/".join("%.2f" % v for v in vals)))
        print("| %d | %.3f | %s |" % (layer, dens, " | ".join(cells)))


def own_table(runs):
    """At ProxyAttn's own density (gamma 0.95, p1, min_budget_tokens 0), as the H200 run compared."""
    names = list(runs)
    print("\n#### At ProxyAttn's own density (gamma 0.95, p1, no floor) per layer\n")
    cols = [("PA p1", "p1_s4|stage2|w1"), ("PA p2", "p2_s4|stage2|w1"), ("PA p2 last_row_count", "p2_s4|lastrow|w1"),
            ("PA p2 window 8", "p2_s4|stage2|w8"), ("XAttention", "xattention")]
    print("| prompt | layer | density | " + " | ".join(l for l, _ in cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    for n in names:
        for L in runs[n]:
            t = L["targets"]["own"]
            print("| %s | %d | %.3f | %s |" % (n, L["layer"], L["own_density_g095"],
                                               " | ".join("%.3f" % t[k]["recall"] for _, k in cols)))


def head_table(runs, layer, target):
    for n in runs:
        L = next(x for x in runs[n] if x["layer"] == layer)
        t = L["targets"][target]
        dg = L["diag"]
        print("\n#### %s, layer %d, per head at density %s\n" % (n, layer, target))
        print("| head | kv | sink mass | diag-block mass | last-4-block mass | stage-2 density | oracle density | "
              "XAttn density | recall p1 | p2 | p14 | oracle rank + stage-2 counts | p2 + last_row | XAttn | oracle |")
        print("|" + "---|" * 15)
        for h in range(len(dg["sink"])):
            print("| %d | %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |" % (
                h, h // 7, dg["sink"][h], dg["diag"][h], dg["last4"][h], t["stage2_head_density"][h],
                t["oracle|oraclebudget|w1"]["head_density"][h], t["xattention"]["head_density"][h],
                t["p1_s4|stage2|w1"]["head_recall"][h], t["p2_s4|stage2|w1"]["head_recall"][h],
                t["p14_s4|stage2|w1"]["head_recall"][h], t["oracle|stage2|w1"]["head_recall"][h],
                t["p2_s4|lastrow|w1"]["head_recall"][h],
                t["xattention"]["head_recall"][h], t["oracle|oraclebudget|w1"]["head_recall"][h]))


def locality_table(runs):
    print("\n#### Where the dense mass lies (mean over heads and the prompts)\n")
    print("| layer | sink block | diagonal block | last 4 blocks | last 8 blocks | heads with diag > 0.5 |")
    print("|---|---|---|---|---|---|")
    names = list(runs)
    for i in range(len(runs[names[0]])):
        dgs = [runs[n][i]["diag"] for n in names]
        f = lambda key: mean([mean(d[key]) for d in dgs])
        nh = mean([sum(v > 0.5 for v in d["diag"]) for d in dgs])
        print("| %d | %.3f | %.3f | %.3f | %.3f | %.1f |" % (runs[names[0]][i]["layer"], f("sink"), f("diag"),
                                                          f("last4"), f("last8"), nh))


def combo_table(runs, path):
    """Per layer: the default, the parameter-only fix (p2 + last_row_count) and it with a forced
    window of 4 blocks (combo.py), against the XAttention-style selector (analyze.py)."""
    with open(path) as f:
        rows = [r for r in json.load(f) if "profile" not in r]
    by = {}
    for r in rows:
        by[(SHORT.get(r["prompt"], r["prompt"]), r["layer"], r["groups"], r["mode"], r["window"], r["target"])] = r
    cfgs = [("default p1 row_ratio", 1, "row_ratio", 1), ("p2 row_ratio", 2, "row_ratio", 1),
            ("p2 last_row_count", 2, "last_row_count", 1), ("p2 last_row_count window 4", 2, "last_row_count", 4)]
    for target in ("0.3", "own"):
        print("\n#### Per layer, density %s: recommended settings (mean of the prompts)\n" % target)
        print("| layer | density | " + " | ".join(c[0] for c in cfgs) + " | XAttention |")
        print("|---|---|" + "---|" * (len(cfgs) + 1))
        names = list(runs)
        tot = [[] for _ in range(len(cfgs) + 1)]
        for i in range(len(runs[names[0]])):
            layer = runs[names[0]][i]["layer"]
            vals = []
            for c in cfgs:
                vals.append(mean([by[(n, layer, c[1], c[2], c[3], target)]["recall"] for n in names]))
            vals.append(mean([runs[n][i]["targets"][target]["xattention"]["recall"] for n in names]))
            dens = mean([by[(n, layer, 1, "row_ratio", 1, target)]["density"] for n in names])
            for t, v in zip(tot, vals):
                t.append(v)
            print("| %d | %.3f | %s |" % (layer, dens, " | ".join("%.3f" % v for v in vals)))
        print("| mean | | %s |" % " | ".join("%.3f" % mean(t) for t in tot))
        print("| min | | %s |" % " | ".join("%.3f" % min(t) for t in tot))


def decomposition(runs):
    """The gap between the default and XAttention split into ranking and budget, mean over layers."""
    print("\n#### Decomposition (mean recall over all layers and prompts)\n")
    keys = [("PA default (p1 ranking, stage-2 counts)", "p1_s4|stage2|w1"),
            ("p2 ranking, stage-2 counts", "p2_s4|stage2|w1"),
            ("per-head proxy (p14) ranking, stage-2 counts", "p14_s4|stage2|w1"),
            ("true mass averaged over all heads, stage-2 counts", "Wmean_p1|stage2|w1"),
            ("true mass averaged per kv group, stage-2 counts", "Wmean_p2|stage2|w1"),
            ("oracle ranking, stage-2 counts", "oracle|stage2|w1"),
            ("p1 ranking, oracle counts", "p1_s4|oraclebudget|w1"),
            ("p2 ranking, oracle counts", "p2_s4|oraclebudget|w1"),
            ("p2 ranking, last_row_count", "p2_s4|lastrow|w1"),
            ("oracle ranking, last_row_count", "oracle|lastrow|w1"),
            ("oracle ranking, oracle counts", "oracle|oraclebudget|w1"),
            ("XAttention-style", "xattention")]
    targets = ("0.2", "0.3", "0.4", "own")
    print("| ranking, budget | " + " | ".join("density %s" % t for t in targets) + " | layer 0 at 0.3 |")
    print("|---|" + "---|" * (len(targets) + 1))
    for label, key in keys:
        cells = [mean([L["targets"][t][key]["recall"] for n in runs for L in runs[n]]) for t in targets]
        l0 = mean([runs[n][0]["targets"]["0.3"][key]["recall"] for n in runs])
        print("| %s | %s | %.3f |" % (label, " | ".join("%.3f" % c for c in cells), l0))


def budget_error(runs):
    """Per layer: stage 2's per-head density against the oracle's at density 0.3."""
    print("\n#### Stage-2 budget against the oracle's per-head density at 0.3 (mean over prompts)\n")
    print("| layer | mean abs difference per head | worst head: stage-2 / oracle |")
    print("|---|---|---|")
    names = list(runs)
    for i in range(len(runs[names[0]])):
        diffs, worst = [], (0, 0, 0)
        for n in names:
            t = runs[n][i]["targets"]["0.3"]
            s2, orc = t["stage2_head_density"], t["oracle|oraclebudget|w1"]["head_density"]
            for a, b in zip(s2, orc):
                diffs.append(abs(a - b))
                if abs(a - b) > abs(worst[1] - worst[2]):
                    worst = (0, a, b)
        print("| %d | %.3f | %.3f / %.3f |" % (runs[names[0]][i]["layer"], mean(diffs), worst[1], worst[2]))


def main():
    args = sys.argv[1:]
    combo = None
    if "--combo" in args:
        i = args.index("--combo")
        combo = args[i + 1]
        del args[i:i + 2]
    runs = load(args)
    decomposition(runs)
    if combo:
        combo_table(runs, combo)
    budget_error(runs)
    for target in ("0.2", "0.3", "0.4", "own"):
        variant_table(runs, target)
    layer_table(runs, "0.3", [("PA p1", "p1_s4|stage2|w1"), ("PA p2", "p2_s4|stage2|w1"),
                              ("PA p2 last_row", "p2_s4|lastrow|w1"), ("PA p2 window 8", "p2_s4|stage2|w8"),
                              ("XAttention", "xattention"), ("oracle rank, stage-2 counts", "oracle|stage2|w1"),
                              ("p2 rank, oracle counts", "p2_s4|oraclebudget|w1"), ("oracle", "oracle|oraclebudget|w1")])
    own_table(runs)
    locality_table(runs)
    for layer in (0, 11, 16):
        head_table(runs, layer, "0.3")


if __name__ == "__main__":
    main()
