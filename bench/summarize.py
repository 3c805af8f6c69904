"""Markdown tables from a cuda_bench.py JSON file: python3 bench/summarize.py RESULTS.json"""
import json
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


if __name__ == "__main__":
    main(sys.argv[1])
