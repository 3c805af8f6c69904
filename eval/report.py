"""Tables, intervals, paired tests and a plot from eval/run_eval.py's JSON lines.

    python3 eval/report.py results_qwen.jsonl results_smollm2.jsonl --md report.md --png accuracy.png

Per (model, length, method): accuracy with a 95% Wilson interval, mean density and sparsity over
layers and prompts, RULER's partial score, and a paired exact McNemar test against dense on the
prompts both answered (two-sided binomial test on the discordant pairs); then accuracy per task.
Each method is counted on the prompts that it and dense both answered, so every comparison is
paired (a method run on fewer prompts shows its own n).
"""
import argparse
import collections
import gzip
import json
import math


def wilson(k, n, z=1.959964):
    """95% Wilson score interval of k successes in n trials."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar(b, c):
    """Exact two-sided McNemar p-value: b prompts only the method got right, c only dense did."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def load(paths):
    rows = []
    for path in paths:
        with (gzip.open if path.endswith(".gz") else open)(path, "rt") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    # The last result of a (prompt, method) counts, should a prompt have been redone.
    latest = {}
    for r in rows:
        latest[(r["model"], r["length"], r["task"], r["index"], r["method"])] = r
    return list(latest.values())


def summarize(rows, methods=None):
    """{(model, length): {"methods": [...], "prompts": [...], "stats": {method: {...}}}}."""
    groups = collections.defaultdict(list)
    for r in rows:
        groups[(r["model"], r["length"])].append(r)
    out = {}
    for key, rs in sorted(groups.items()):
        by = collections.defaultdict(dict)
        for r in rs:
            by[r["method"]][(r["task"], r["index"])] = r
        names = [m for m in (methods or list(dict.fromkeys(r["method"] for r in rs))) if m in by]
        if "dense" not in names:
            continue
        stats = {}
        for m in names:
            common = sorted(set(by[m]) & set(by["dense"]))
            got = [by[m][p] for p in common]
            k = sum(r["correct"] for r in got)
            b = sum(by[m][p]["correct"] and not by["dense"][p]["correct"] for p in common)
            c = sum(by["dense"][p]["correct"] and not by[m][p]["correct"] for p in common)
            tasks = collections.defaultdict(lambda: [0, 0])
            for r in got:
                tasks[r["task"]][0] += r["correct"]
                tasks[r["task"]][1] += 1
            density = sum(r["density"] for r in got) / max(1, len(got))
            stats[m] = dict(n=len(got), right=k, acc=k / max(1, len(got)), ci=wilson(k, len(got)),
                            density=density, score=sum(r["score"] for r in got) / max(1, len(got)),
                            only_method=b, only_dense=c, p=mcnemar(b, c), tasks=dict(tasks),
                            diff=(k - sum(by["dense"][p]["correct"] for p in common)) / max(1, len(got)))
        out[key] = dict(methods=names, stats=stats)
    return out


def versus(rows, pairs):
    """Markdown: per (model, length) and pair A:B, the paired exact McNemar test of A against B on the
    prompts both answered."""
    groups = collections.defaultdict(lambda: collections.defaultdict(dict))
    for r in rows:
        groups[(r["model"], r["length"])][r["method"]][(r["task"], r["index"])] = r["correct"]
    lines = ["| model | tokens | A | B | prompts | A right | B right | only A / only B | McNemar p |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (model, n), by in sorted(groups.items()):
        for pair in pairs:
            a, b = pair.split(":", 1)
            if a not in by or b not in by:
                continue
            common = sorted(set(by[a]) & set(by[b]))
            only_a = sum(by[a][p] and not by[b][p] for p in common)
            only_b = sum(by[b][p] and not by[a][p] for p in common)
            lines.append(f"| {model} | {n} | {a} | {b} | {len(common)} | {sum(by[a][p] for p in common)} | "
                         f"{sum(by[b][p] for p in common)} | {only_a} / {only_b} | {mcnemar(only_a, only_b):.4f} |")
    return "\n".join(lines)


def markdown(summary):
    lines = []
    for (model, length), g in summary.items():
        lines += [f"### {model}, {length} tokens", "",
                  "| method | accuracy (95% CI) | vs dense | McNemar p (b/c) | density | sparsity | RULER score |",
                  "|---|---|---|---|---|---|---|"]
        for m in g["methods"]:
            s = g["stats"][m]
            lo, hi = s["ci"]
            paired = "-" if m == "dense" else f"{100 * s['diff']:+.1f} pts"
            test = "-" if m == "dense" else f"{s['p']:.3f} ({s['only_method']}/{s['only_dense']})"
            dens = "100%" if m == "dense" else f"{100 * s['density']:.1f}%"
            spars = "0%" if m == "dense" else f"{100 * (1 - s['density']):.1f}%"
            lines.append(f"| {m} | {100 * s['acc']:.1f}% ({s['right']}/{s['n']}; {100 * lo:.1f}-{100 * hi:.1f}) | "
                         f"{paired} | {test} | {dens} | {spars} | {100 * s['score']:.1f} |")
        tasks = sorted({t for s in g["stats"].values() for t in s["tasks"]})
        lines += ["", "| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
        for m in g["methods"]:
            t = g["stats"][m]["tasks"]
            lines.append(f"| {m} | " + " | ".join(f"{t[x][0]}/{t[x][1]}" if x in t else "-" for x in tasks) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(summary, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(summary)
    methods = list(dict.fromkeys(m for g in summary.values() for m in g["methods"]))
    # One colour and marker per method: the main methods round, the ablations in other shapes.
    colour = {m: plt.get_cmap("tab20")((2 * i + i // 10) % 20) for i, m in enumerate(methods)}
    marker = {m: "osD^v<>ph*"[i // 5 % 10] for i, m in enumerate(methods)}
    ncol = min(6, len(methods))
    legend_in = 0.2 * -(-len(methods) // ncol) + 0.6  # inches: the legend's rows and the x labels
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4 + legend_in), squeeze=False)
    for ax, key in zip(axes[0], keys):
        g = summary[key]
        for m in g["methods"]:
            s = g["stats"][m]
            lo, hi = s["ci"]
            x = 0.0 if m == "dense" else 100 * (1 - s["density"])
            ax.errorbar(x, 100 * s["acc"], yerr=[[100 * (s["acc"] - lo)], [100 * (hi - s["acc"])]], fmt=marker[m],
                        capsize=3, color=colour[m])
        ax.set_title(f"{key[0]}, {key[1]} tokens", fontsize=9)
        ax.set_xlabel("sparsity (% of causal blocks skipped)")
        ax.set_ylabel("accuracy (%), 95% Wilson interval")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker=marker[m], linestyle="", color=colour[m]) for m in methods]
    fig.legend(handles, methods, loc="lower center", ncol=ncol, fontsize=8)
    fig.tight_layout(rect=(0, legend_in / (4 + legend_in), 1, 1))
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="JSON lines from eval/run_eval.py (.gz too)")
    ap.add_argument("--methods", nargs="*", help="only these methods, in this order (dense is needed)")
    ap.add_argument("--md", help="write the tables here too")
    ap.add_argument("--png", help="accuracy against sparsity, one panel per model and length")
    ap.add_argument("--rename", nargs="*", default=[], metavar="OLD=NEW", help="display names of models")
    ap.add_argument("--label", nargs="*", default=[], metavar="OLD=NEW",
                    help="display names of methods (--methods and --versus then take the new names)")
    ap.add_argument("--versus", nargs="*", default=[], metavar="A:B",
                    help="also the paired test of method A against method B (e.g. pa:flexprefill@pa)")
    args = ap.parse_args()
    rows = load(args.results)
    names = dict(r.split("=", 1) for r in args.rename)
    # A method's spec holds '=' too: its display name follows the last one.
    labels = dict(r.rsplit("=", 1) for r in args.label)
    for r in rows:
        r["model"] = names.get(r["model"], r["model"])
        r["method"] = labels.get(r["method"], r["method"])
    summary = summarize(rows, args.methods)
    text = markdown(summary)
    if args.versus:
        text += "\n\n" + versus(rows, args.versus)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text + "\n")
    if args.png:
        plot(summary, args.png)


if __name__ == "__main__":
    main()
