"""Accuracy against sparsity, one point per (method, prompt length), from run_eval.py's JSON files.

    python3 eval/plot_accuracy.py bench/results/2026-11-28_h200_accuracy/eval_*.json \
        --out bench/results/2026-11-28_h200_accuracy/accuracy_vs_sparsity.png
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    results = [r for f in args.files for r in json.load(open(f))["results"]]
    lengths = sorted({r["length"] for r in results})
    methods = list(dict.fromkeys(r["method"] for r in results))
    markers = {n: m for n, m in zip(lengths, "os^Dv")}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, method in enumerate(methods):
        xs, ys = [], []
        for n in lengths:
            rows = [r for r in results if r["method"] == method and r["length"] == n]
            if not rows:
                continue
            sparsity = 0.0 if method == "dense" else 1.0 - sum(r["density"] for r in rows) / len(rows)
            acc = 100.0 * sum(r["correct"] for r in rows) / len(rows)
            xs.append(100.0 * sparsity)
            ys.append(acc)
            ax.scatter(xs[-1], ys[-1], marker=markers[n], color=f"C{i}")
        ax.plot(xs, ys, color=f"C{i}", alpha=0.5, label=method)
    for n in lengths:
        ax.scatter([], [], marker=markers[n], color="gray", label=f"{n} tokens")
    ax.set_xlabel("sparsity (% of causal blocks skipped)")
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_title("Qwen2.5-Coder-0.5B-Instruct, passkey + needle tasks, H200")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)


if __name__ == "__main__":
    main()
