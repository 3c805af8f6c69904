"""What ProxyAttn keeps on a real model's own activations at long lengths: per layer and per head,
the density it picks, the share of dense attention's softmax mass it keeps (recall) and its
output error against dense, for each setting; and one layer's block mask at the longest length.

    python3 eval/long_density.py /tmp/proxyattn_model .model/eval/qwen .model/eval/qwen_long --yarn 4 \\
        --lengths 32672 65440 130976 --count 2 --settings defaults gamma=0.9 --out DIR
    python3 eval/long_density.py --plot DIR      # the PNGs from DIR/density.json and DIR/mask.npz

The model runs dense attention (every layer's output is dense attention's), so each layer sees the
activations of the real model; at every layer ProxyAttn runs on the same inputs beside it, and
with --matched each baseline of eval/baselines tuned to that setting's density on that layer input
(as eval/run_eval.py's BASELINE@pa methods), through the same sparse kernel. Writes
DIR/density.json (one entry per prompt, setting and layer: per-head density, recall, error and
budget) and DIR/mask.npz (the kept blocks of every head of --mask-layer on the first prompt of
the longest length). The plot step needs matplotlib only.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# eval/ modules by name; the repository root gives eval.baselines.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") not in (HERE, ROOT)] + [ROOT, HERE]


def parse_setting(text):
    """'defaults' or name=value[,name=value] over proxyattn.Options fields."""
    import proxyattn
    if text == "defaults":
        return {}
    options = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name not in proxyattn.DEFAULTS:
            raise ValueError(f"setting {text!r}: {name!r} is not an option ({sorted(proxyattn.DEFAULTS)})")
        kind = type(proxyattn.DEFAULTS[name])
        options[name] = value in ("1", "true", "True") if kind is bool else kind(value)
    return options


def measure(args):
    import numpy as np
    import torch
    import transformers
    import transformers.masking_utils

    import proxyattn
    import proxyattn.transformers as pat
    import tasks
    from build_prompts import read_prompts
    from load_model import load
    from eval.baselines import match_density, to_csr

    settings = {s: parse_setting(s) for s in args.settings}
    by_length = {}
    for folder in args.prompts:
        corpus, spec = read_prompts(folder)
        for p in spec["prompts"]:
            p = tasks.Prompt(**p)
            if p.length in args.lengths and len(by_length.setdefault(p.length, [])) < args.count:
                by_length[p.length].append((p, corpus))
    missing = [n for n in args.lengths if len(by_length.get(n, [])) < args.count]
    if missing:
        sys.exit(f"--lengths {missing}: fewer than {args.count} prompts of that length in {args.prompts}")

    device = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU: a check of this script
    model, _ = load(args.model_dir, "bfloat16" if device == "cuda" else "float32", device, yarn=args.yarn)
    layers = model.config.num_hidden_layers
    mask_layer = layers // 2 if args.mask_layer is None else args.mask_layer
    state = {"rows": [], "where": None, "mask": None}

    def matched(q, k, v, scale, options, stats, dense, dense_lse, norm):
        """Per baseline of --matched: its density, per-head recall and error at the setting's density."""
        res = {}
        for name in args.matched:
            m = match_density(name, float(stats["total_density"]), q, k,
                              block_size=options.get("block_size", 128), steps=24)
            ro, ci = to_csr(m.mask)
            out, lse = proxyattn.sparse_attention(q, k, v, (ro.to(q.device), ci.to(q.device)), scale, return_lse=True)
            res[name] = dict(density=m.density,
                             recall=torch.exp(lse.float() - dense_lse.float()).nan_to_num(0.0).mean(dim=-1).tolist(),
                             error=((out.float() - dense.float()).norm(dim=(0, 2)) / norm).tolist())
        return res

    def layer_fn(q, k, v, scale, layer):
        dense, dense_lse = proxyattn.dense_attention(q, k, v, scale, return_lse=True)
        norm = dense.float().norm(dim=(0, 2))  # per head
        for name, options in settings.items():
            out, lse, stats = proxyattn.attention(q, k, v, scale, return_lse=True, return_stats=True, **options)
            recall = torch.exp(lse.float() - dense_lse.float()).nan_to_num(0.0).mean(dim=-1)
            error = (out.float() - dense.float()).norm(dim=(0, 2)) / norm
            state["rows"].append(dict(**state["where"], setting=name, layer=layer,
                                      total_density=float(stats["total_density"]),
                                      density=stats["density"][0].tolist(),
                                      budget_blocks=stats["budget_blocks"][0].tolist(),
                                      recall=recall.tolist(), error=error.tolist(),
                                      matched=matched(q, k, v, scale, options, stats, dense, dense_lse, norm)))
            if state["mask"] is not None and layer == mask_layer and name == args.settings[0]:
                kept = proxyattn.estimate(q, k, scale, **options).to_dense()  # [heads, nb, nb]
                state["mask"].update(kept=np.packbits(kept, axis=-1), shape=kept.shape, layer=layer)
        return dense

    pat.register(min_prefill_tokens=2)
    transformers.AttentionInterface.register("pa_study", pat.attention_function(layer_fn))
    transformers.AttentionMaskInterface.register("pa_study", transformers.masking_utils.sdpa_mask)
    model.set_attn_implementation("pa_study")
    os.makedirs(args.out, exist_ok=True)
    longest = max(args.lengths)
    for n in sorted(args.lengths):
        for i, (p, corpus) in enumerate(by_length[n]):
            state["where"] = dict(length=n, task=p.task, index=p.index)
            state["mask"] = {} if (n == longest and i == 0) else None
            ids = torch.tensor([p.ids(corpus)], device=device)
            t0 = time.time()
            with torch.no_grad():
                model(ids, logits_to_keep=1, use_cache=False)
            if device == "cuda":
                torch.cuda.synchronize()
            rows = [r for r in state["rows"] if r["length"] == n and r["index"] == p.index and r["task"] == p.task]
            line = ", ".join(f"{s} {np.mean([r['total_density'] for r in rows if r['setting'] == s]):.3f}"
                             for s in settings)
            print(f"{n} tokens, {p.task} #{p.index}: density {line} ({time.time() - t0:.1f} s)", flush=True)
            if state["mask"]:
                np.savez_compressed(os.path.join(args.out, "mask.npz"), length=n, task=p.task, index=p.index,
                                    **state["mask"])
    with open(os.path.join(args.out, "density.json"), "w") as f:
        json.dump(dict(gpu=torch.cuda.get_device_name() if device == "cuda" else "cpu", model=args.model_dir, yarn=args.yarn,
                       commit=os.environ.get("PROXYATTN_COMMIT"), settings=args.settings,
                       layers=layers, rows=state["rows"]), f)
    summarize(state["rows"], args.settings)


def summarize_matched(rows, settings):
    """Per setting and layer: ProxyAttn's density, recall and error beside each matched baseline's."""
    import numpy as np
    names = sorted({b for r in rows for b in r.get("matched", {})})
    if not names:
        return
    print("\n| tokens | setting | layer | density | recall: ProxyAttn | " + " | ".join(names) +
          " | error: ProxyAttn | " + " | ".join(names) + " |")
    print("|---" * (6 + 2 * len(names)) + "|")
    for n in sorted({r["length"] for r in rows}):
        for s in settings:
            for layer in sorted({r["layer"] for r in rows}):
                sel = [r for r in rows if r["length"] == n and r["setting"] == s and r["layer"] == layer]
                if not sel:
                    continue
                mean = lambda f: np.mean([np.mean(f(r)) for r in sel])  # noqa: E731
                print(f"| {n} | {s} | {layer} | {mean(lambda r: r['total_density']):.1%} | "
                      f"{mean(lambda r: r['recall']):.3f} | "
                      + " | ".join(f"{mean(lambda r: r['matched'][b]['recall']):.3f}" for b in names)
                      + f" | {mean(lambda r: r['error']):.3f} | "
                      + " | ".join(f"{mean(lambda r: r['matched'][b]['error']):.3f}" for b in names) + " |")


def summarize(rows, settings):
    """Per length and setting: density over all layers, recall (mean, worst head) and error."""
    import numpy as np
    names = sorted({b for r in rows for b in r.get("matched", {})})
    print("\n| tokens | setting | density (all layers) | densest layer | recall mean (worst head) | "
          "output error mean (worst head) |" + "".join(f" {b}: recall, error |" for b in names))
    print("|---|---|---|---|---|---|" + "---|" * len(names))
    for n in sorted({r["length"] for r in rows}):
        for s in settings:
            sel = [r for r in rows if r["length"] == n and r["setting"] == s]
            if not sel:
                continue
            by_layer = {}
            for r in sel:
                by_layer.setdefault(r["layer"], []).append(r["total_density"])
            densest = max(by_layer, key=lambda l: np.mean(by_layer[l]))
            recall = np.concatenate([r["recall"] for r in sel])
            error = np.concatenate([r["error"] for r in sel])
            print(f"| {n} | {s} | {np.mean([r['total_density'] for r in sel]):.1%} | layer {densest} "
                  f"({np.mean(by_layer[densest]):.1%}) | {recall.mean():.3f} ({recall.min():.3f}) | "
                  f"{error.mean():.3f} ({error.max():.3f}) |" +
                  "".join(f" {np.mean([r['matched'][b]['recall'] for r in sel]):.3f}, "
                          f"{np.mean([r['matched'][b]['error'] for r in sel]):.3f} |" for b in names))
    summarize_matched(rows, settings)


def plot(folder):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    with open(os.path.join(folder, "density.json")) as f:
        data = json.load(f)
    rows, settings = data["rows"], data["settings"]
    summarize(rows, settings)
    lengths = sorted({r["length"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for s in settings:
        mean = [np.mean([r["total_density"] for r in rows if r["length"] == n and r["setting"] == s]) for n in lengths]
        axes[0].plot(lengths, mean, "o-", label=s)
    axes[0].set(xscale="log", xlabel="prompt tokens", ylabel="density (kept share of causal blocks)",
                title="ProxyAttn's own density, mean over layers and prompts")
    axes[0].set_xticks(lengths, [f"{round(n / 1024)}K" for n in lengths])
    axes[0].minorticks_off()
    axes[0].legend()
    s = settings[0]
    for n in lengths:
        per_layer = [np.mean([r["total_density"] for r in rows if r["length"] == n and r["setting"] == s
                              and r["layer"] == l]) for l in range(data["layers"])]
        axes[1].plot(range(data["layers"]), per_layer, "o-", ms=3, label=f"{round(n / 1024)}K")
    axes[1].set(xlabel="layer", ylabel="density", title=f"per layer ({s})")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "density_vs_length.png"), dpi=110)

    mask_path = os.path.join(folder, "mask.npz")
    if os.path.exists(mask_path):
        m = np.load(mask_path)
        heads, nb, _ = (int(x) for x in m["shape"])
        kept = np.unpackbits(m["kept"], axis=-1, count=nb).astype(bool)[:heads]
        count = kept.sum(axis=0).astype(float)
        count[np.triu_indices(nb, 1)] = np.nan
        fig, ax = plt.subplots(figsize=(7.5, 6.5))
        im = ax.imshow(count, cmap="viridis", interpolation="nearest", vmin=0, vmax=heads)
        fig.colorbar(im, ax=ax, label=f"query heads (of {heads}) that keep the block")
        ax.set(xlabel="key block (128 tokens)", ylabel="query block",
               title=f"layer {int(m['layer'])} at {int(m['length']):,} tokens ({m['task']}): "
                     f"{np.nansum(count) / (heads * nb * (nb + 1) / 2):.1%} of causal blocks kept")
        fig.tight_layout()
        fig.savefig(os.path.join(folder, "mask_layer%d_%dk.png" % (int(m["layer"]), round(int(m["length"]) / 1024))), dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", nargs="?")
    ap.add_argument("prompts", nargs="*", help="folders from eval/build_prompts.py")
    ap.add_argument("--lengths", type=int, nargs="+", default=[32672, 65440, 130976])
    ap.add_argument("--count", type=int, default=2, help="prompts per length")
    ap.add_argument("--settings", nargs="+", default=["defaults", "gamma=0.9"])
    ap.add_argument("--yarn", type=float, default=None, help="YaRN factor (eval/load_model.py)")
    ap.add_argument("--matched", nargs="*", default=[], choices=["flexprefill", "xattention"],
                    help="also these baselines, tuned to each setting's density on each layer input")
    ap.add_argument("--mask-layer", type=int, default=None, help="the layer whose mask is kept (default: the middle)")
    ap.add_argument("--out", help="output folder")
    ap.add_argument("--plot", metavar="DIR", help="only draw the plots of DIR")
    args = ap.parse_args()
    if args.plot:
        plot(args.plot)
    elif not (args.model_dir and args.prompts and args.out):
        ap.error("model_dir, at least one prompts folder and --out are needed (or --plot DIR)")
    else:
        measure(args)


if __name__ == "__main__":
    main()
