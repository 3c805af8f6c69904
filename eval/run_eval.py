"""Accuracy of ProxyAttn on a real model against dense attention and the baseline block selectors.

Every method changes only the prefill attention of every layer; decoding is dense (sdpa) for all.
- dense: transformers' sdpa.
- pa-g<gamma>-p<groups>[-last]: proxyattn.attention with those parameters (its own density);
  -last uses budget_mode last_row_count (eval/study's recommendation, with p = Hkv).
- flexprefill, xattention, static: the baselines of eval/baselines, each tuned per layer and per
  prompt to the density that the ProxyAttn method named by --match (default pa-g0.95-p1) has on
  that same layer input, then run through the same sparse kernel (proxyattn.sparse_attention).

Per prompt: exact-match correctness of the greedy answer. Per layer (on the prompts chosen with
--detail): density, attention recall (the share of the dense softmax mass inside the kept blocks,
from the two log-sum-exps) and the relative output error against dense attention on the same
layer input.

    python3 eval/run_eval.py /tmp/proxyattn_model .model/prompts.json --json out.json
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The scripts of eval/ import each other by module name; the repository root gives eval.baselines.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") not in (HERE, ROOT)] + [ROOT, HERE]
import torch  # noqa: E402
import transformers  # noqa: E402
import transformers.masking_utils  # noqa: E402

import proxyattn  # noqa: E402
import proxyattn.transformers as pat  # noqa: E402
import tasks  # noqa: E402
from eval.baselines import match_density, to_csr  # noqa: E402
from build_prompts import read_prompts  # noqa: E402
from load_model import load  # noqa: E402

BASELINES = ("flexprefill", "xattention", "static")
_state = {"method": None, "record": None, "detail": False, "match": {}}


def _pa_options(method):
    """pa-g<gamma>-p<groups>[-last]: -last selects budget_mode last_row_count."""
    parts = method[len("pa-g"):].split("-")
    options = dict(gamma=float(parts[0]), proxy_groups=int(parts[1][1:]))
    if parts[2:] == ["last"]:
        options["budget_mode"] = "last_row_count"
    return options


def _layer(q, k, v, scale):
    """One sequence's prefill attention under the current method; returns out [n, hq, d]."""
    method, record = _state["method"], _state["record"]
    lse = None
    if method.startswith("pa-"):
        out, lse, stats = proxyattn.attention(q, k, v, scale, return_lse=True, return_stats=True,
                                              **_pa_options(method))
        density = stats["total_density"]
    else:
        # The density to match: that of the --match method on this layer input.
        _, stats = proxyattn.estimate(q, k, scale, return_stats=True, copy=False, **_state["match"])
        target = stats["total_density"]
        if method == "static":
            match = match_density("static", target, q, k, block_size=128)
        else:
            match = match_density(method, target, q, k, block_size=128, steps=24)
        ro, ci = to_csr(match.mask)
        out, lse = proxyattn.sparse_attention(q, k, v, (ro.to(q.device), ci.to(q.device)), scale, return_lse=True)
        density = match.density
    entry = {"density": float(density)}
    if _state["detail"]:
        dense, dense_lse = proxyattn.dense_attention(q, k, v, scale, return_lse=True)
        recall = torch.exp(lse.float() - dense_lse.float()).nan_to_num(0.0).mean().item()
        err = ((out.float() - dense.float()).norm() / dense.float().norm()).item()
        entry.update(recall=recall, error=err)
    record.append(entry)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("prompts", help="JSON from eval/build_prompts.py")
    ap.add_argument("--methods", nargs="+",
                    default=["dense", "pa-g0.95-p1", "pa-g0.9-p1", "pa-g0.95-pH", "pa-g0.9-pH", *BASELINES])
    ap.add_argument("--lengths", type=int, nargs="*", help="only these prompt lengths")
    ap.add_argument("--depths", type=float, nargs="*", help="only these needle depths")
    ap.add_argument("--detail", type=int, default=1, help="per-layer recall and error on the first N prompts of each length")
    ap.add_argument("--max-new-tokens", type=int, default=12)
    ap.add_argument("--match", default="pa-g0.95-p1",
                    help="the ProxyAttn method (pa-g<gamma>-p<groups|H>[-last]) whose density the baselines match")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device == "cuda" else "float32"
    model, tokenizer = load(args.model_dir, dtype, device, attn_implementation="sdpa")
    pat.register(min_prefill_tokens=2)  # every prompt's prefill goes through the method under test
    transformers.AttentionInterface.register("pa_eval", pat.attention_function(_layer))
    transformers.AttentionMaskInterface.register("pa_eval", transformers.masking_utils.sdpa_mask)
    hkv = model.config.num_key_value_heads
    methods = [m.replace("-pH", f"-p{hkv}") for m in args.methods]
    _state["match"] = _pa_options(args.match.replace("-pH", f"-p{hkv}"))
    spec = read_prompts(args.prompts)
    prompts = [p for p in spec["prompts"] if (not args.lengths or p["length"] in args.lengths)
               and (not args.depths or p["depth"] in args.depths)]

    results, seen = [], {}
    t_start = time.time()
    for p in prompts:
        ids = torch.tensor([p["ids"]], device=device)
        seen[p["length"]] = seen.get(p["length"], 0) + 1
        for method in methods:
            _state.update(method=method, record=[], detail=seen[p["length"]] <= args.detail)
            model.set_attn_implementation("sdpa" if method == "dense" else "pa_eval")
            with torch.no_grad():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.max_new_tokens,
                                     do_sample=False, pad_token_id=spec["pad_token_id"])
            answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            layers = _state["record"]
            row = dict(method=method, task=p["task"], length=p["length"], tokens=ids.shape[1], depth=p["depth"],
                       expected=p["answer"], answer=answer.strip()[:40], correct=tasks.is_correct(answer, p["answer"]),
                       density=sum(x["density"] for x in layers) / max(1, len(layers)), layers=layers)
            results.append(row)
            print(f"{p['task']:>14} {ids.shape[1]:>6} d{p['depth']:.2f} {method:>12} "
                  f"density {row['density']:.3f} {'ok ' if row['correct'] else 'WRONG'} {row['answer'][:16]!r} "
                  f"({time.time() - t_start:.0f} s)", flush=True)
    with open(args.json, "w") as f:
        json.dump(dict(model=os.path.basename(args.model_dir), device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
                       commit=os.environ.get("PROXYATTN_COMMIT"), match=args.match, results=results), f)
    summarize(results)


def summarize(results):
    """Accuracy and mean density per method and length."""
    print("\n| length | method | accuracy | density | recall (detail) | output error (detail) |")
    print("|---|---|---|---|---|---|")
    keys = sorted({(r["length"], r["method"]) for r in results}, key=lambda x: x[0])
    order = {m: i for i, m in enumerate(dict.fromkeys(r["method"] for r in results))}
    for length, method in sorted(keys, key=lambda x: (x[0], order[x[1]])):
        rows = [r for r in results if r["length"] == length and r["method"] == method]
        acc = sum(r["correct"] for r in rows) / len(rows)
        dens = sum(r["density"] for r in rows) / len(rows)
        det = [x for r in rows for x in r["layers"] if "recall" in x]
        rec = f"{sum(x['recall'] for x in det) / len(det):.3f}" if det else "-"
        err = f"{sum(x['error'] for x in det) / len(det):.3f}" if det else "-"
        dens_s = "100%" if method == "dense" else f"{dens:.1%}"
        print(f"| {length} | {method} | {acc:.1%} ({sum(r['correct'] for r in rows)}/{len(rows)}) | {dens_s} | {rec} | {err} |")


if __name__ == "__main__":
    main()
