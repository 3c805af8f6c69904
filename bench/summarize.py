"""Markdown tables from cuda_bench.py JSON files.

    python3 bench/summarize.py RESULTS.json      # one run: dense, sparse and whole-layer tables
    python3 bench/summarize.py --ab FOLDER       # bench_before_*.json against bench_after_*.json
"""
import collections
import glob
import json
import os
import statistics
import sys


def main(path):
    data = json.load(open(path))
    meta, rows = data.get("meta", {}), data["results"]
    print(f"GPU {meta.get('gpu')}, torch {meta.get('torch')}, {meta.get('date')}, commit {meta.get('commit')}\n")
    for shape in dict.fromkeys(r["shape"] for r in rows):
        sel = [r for r in rows if r["shape"] == shape and r.get("ms") is not None]
        hq, hkv, d = sel[0]["hq"], sel[0]["hkv"], sel[0]["d"]
        print(f"### {shape} ({hq} q / {hkv} kv heads, D {d}), bf16, causal, batch 1\n")
        print("| N | cuDNN dense ms (TFLOP/s) | FA2 dense ms (TFLOP/s) | ours dense ms (TFLOP/s) | ours / FA2 time | ours estimate ms (% of cuDNN) |")
        print("|---|---|---|---|---|---|")
        for n in sorted({r["n"] for r in sel}):
            at = {r["method"]: r for r in sel if r["n"] == n and r["density"] is None}
            c, f, o, e = (at.get(m) for m in ("cudnn_dense", "flash_dense", "ours_dense", "ours_estimate"))
            cell = lambda r: f"{r['ms']:.2f} ({r['tflops']:.0f})" if r else "-"
            ratio = f"{o['ms'] / f['ms']:.2f}" if o and f else "-"
            est = f"{e['ms']:.2f} ({100 * e['ms'] / c['ms']:.1f}%)" if e and c else "-"
            print(f"| {n} | {cell(c)} | {cell(f)} | {cell(o)} | {ratio} | {est} |")
        print()
        print("| N | density | FlexAttention ms (TFLOP/s on kept tiles) | ours ms (TFLOP/s on kept tiles) | ours / Flex time | ours / cuDNN dense time | ours vs Flex output err |")
        print("|---|---|---|---|---|---|---|")
        for n in sorted({r["n"] for r in sel}):
            dens = [r for r in sel if r["n"] == n and r["method"] == "ours_sparse"]
            for o in dens:
                f = next((r for r in sel if r["n"] == n and r["method"] == "flex_sparse" and abs(r["density"] - o["density"]) < 1e-9), None)
                c = next((r for r in sel if r["n"] == n and r["method"] == "cudnn_dense"), None)
                flex = f"{f['ms']:.2f} ({f['tflops']:.0f})" if f else "-"
                ratio = f"{o['ms'] / f['ms']:.2f}" if f else "-"
                xc = f"{o['ms'] / c['ms']:.3f}" if c else "-"
                err = f"{o['err']:.1e}" if o.get("err") is not None else "-"
                print(f"| {n} | {100 * o['density']:.1f}% | {flex} | {o['ms']:.2f} ({o['tflops']:.0f}) | {ratio} | {xc} | {err} |")
        print()
        # The whole layer in one call (estimate + sparse) at the density the estimate picked:
        # ours_attention (the default gamma) and ours_layer_g<gamma> (cuda_bench.py --layer-gammas).
        layers = [r for r in sel if r["method"] == "ours_attention" or r["method"].startswith("ours_layer_g")]
        if layers:
            print("| N | gamma | density | whole layer ms (TFLOP/s on kept tiles) | / cuDNN dense time | speed-up |")
            print("|---|---|---|---|---|---|")
            for o in sorted(layers, key=lambda r: (r["n"], -(r.get("gamma") or 1.0))):
                c = next((r for r in sel if r["n"] == o["n"] and r["method"] == "cudnn_dense"), None)
                gamma = "default" if o.get("gamma") is None else f"{o['gamma']:g}"
                dens = f"{100 * o['density']:.1f}%" if o.get("density") is not None else "-"
                tf = f" ({o['tflops']:.0f})" if o.get("tflops") else ""
                xc = f"{o['ms'] / c['ms']:.3f} | {c['ms'] / o['ms']:.1f}x" if c else "- | -"
                print(f"| {o['n']} | {gamma} | {dens} | {o['ms']:.2f}{tf} | {xc} |")
            print()


def ab(folder):
    """Each timing as its ratio to cuDNN in the same run, the mean over the rounds of each tree, and
    after / before; whether every estimated mask has the same digest in every run."""
    runs = {side: [json.load(open(f)) for f in sorted(glob.glob(os.path.join(folder, f"bench_{side}_*.json")))]
            for side in ("before", "after")}
    cells = {}
    for side, datas in runs.items():
        for data in datas:
            for r in data["results"]:
                if r["method"] == "cudnn_dense" or r.get("x_cudnn") is None:
                    continue
                dens = f"{r['density']:.2f}" if r["method"] == "ours_sparse" else ""
                key = (r["shape"], r["n"], r["method"], dens)
                cells.setdefault(key, {"before": [], "after": [], "masks": set()})
                cells[key][side].append(r["x_cudnn"])
                if r.get("mask_sha256"):
                    cells[key]["masks"].add(r["mask_sha256"])
    print(f"{len(runs['before'])} rounds before, {len(runs['after'])} after\n")
    print("| shape | N | kernel | density | before (x cuDNN) | after (x cuDNN) | after / before | masks |")
    print("|---|---|---|---|---|---|---|---|")
    over = 0
    for (shape, n, method, dens), c in cells.items():
        if not c["before"] or not c["after"]:
            continue
        ratio = statistics.mean(c["after"]) / statistics.mean(c["before"])
        over += ratio > 1.02
        masks = {0: "", 1: "same"}.get(len(c["masks"]), "DIFFER")
        fmt = lambda xs: ", ".join(f"{x:.3f}" for x in xs)
        print(f"| {shape} | {n // 1024}K | {method} | {dens} | {fmt(c['before'])} | {fmt(c['after'])} | "
              f"{ratio:.3f}{' **' if abs(ratio - 1) > 0.02 else ''} | {masks} |")
    print(f"\n{over} of {len(cells)} more than 2% slower after (** : more than 2% either way)")
    kernels(runs)


def kernels(runs):
    """The estimator's kernels one by one (cuda_bench.py's kernels_us): each tree's median over its
    rounds in microseconds, and the call's time that lies between the kernels."""
    per = collections.defaultdict(lambda: collections.defaultdict(lambda: {"before": [], "after": []}))
    for side, datas in runs.items():
        for data in datas:
            for r in data["results"]:
                if "kernels_us" not in r:
                    continue
                cell = per[(r["shape"], r["n"])]
                for name, us in r["kernels_us"].items():
                    cell[name][side].append(us)
                total = sum(r["kernels_us"].values())
                cell["(all kernels)"][side].append(total)
                cell["(between kernels)"][side].append(1000 * r["ms"] - total)
    if not per:
        return
    print("\nThe estimate's kernels (median us per call over the rounds):\n")
    print("| shape | N | kernel | before (us) | after (us) | after / before |")
    print("|---|---|---|---|---|---|")
    for (shape, n), cell in per.items():
        for name, c in sorted(cell.items(), key=lambda kv: -statistics.median(kv[1]["before"] or [0])):
            if not c["before"] or not c["after"]:
                continue
            b, a = statistics.median(c["before"]), statistics.median(c["after"])
            ratio = f"{a / b:.3f}" if b > 0 else "-"
            print(f"| {shape} | {n // 1024}K | {name} | {b:.1f} | {a:.1f} | {ratio} |")


if __name__ == "__main__":
    if sys.argv[1] == "--ab":
        ab(sys.argv[2])
    else:
        main(sys.argv[1])
