"""Accuracy of block selectors on a real model: every method changes only the prefill attention of
every layer; decoding is dense (sdpa) for all.

    python3 eval/run_eval.py MODEL_DIR PROMPTS_DIR --out results.jsonl \\
        --methods dense pa paper=pa:preset=paper xattention@pa flexprefill@pa

Methods ([label=]spec):
- dense: transformers' sdpa.
- pa[:name=value,...]: proxyattn.attention with those options (proxyattn.Options fields, or
  preset=paper); dense_layers=0+1 runs the listed layers dense (the transformers integration's
  per-layer settings).
- pa:pooling=sum|max+sum[,...]: the same selection with stage 1's cells ranked by their summed
  probability (or max plus sum) instead of the largest, each row keeping as many blocks as the
  library's own mask (eval/baselines/pooling.py; a study, not a library option).
- perhead[:name=value,...]: the same rules with a proxy of its own for every query head (each
  head estimated alone, then one sparse pass): what a per-head test of agreement with the shared
  proxy could buy at most, at Hq / g times the stage-1 cost.
- xattention@SPEC, flexprefill@SPEC, static@SPEC: the baselines of eval/baselines, tuned per
  layer and per prompt to the density that the ProxyAttn method SPEC has on that same layer
  input, run through the same sparse kernel.
- prefill_chunk=N (an option of dense and pa): the prompt is prefilled in chunks of N tokens
  through a DynamicCache, as serving engines do; each chunk's queries attend to every key
  before them (for pa: ProxyAttn's queries-fewer-than-keys mode, through the transformers
  integration's mask function), and generation continues from the cache.

PROMPTS_DIR comes from eval/build_prompts.py. Prompts of one length and task go in batches (all
prompts have exactly their length, so a batch needs no padding); the longest length first.
Every (prompt, method) result is appended to --out as one JSON line as soon as it is known, and
a run skips what the file already holds: a run that stops (a crash, a lost machine) loses at
most one batch. eval/report.py turns the file into tables, intervals, paired tests and a plot.
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
from build_prompts import read_prompts  # noqa: E402
from eval.baselines import density as density_of, from_csr, match_density, pooling, to_csr  # noqa: E402
from load_model import compile_rest, find_gguf, load  # noqa: E402

BASELINES = ("flexprefill", "xattention", "static")


class Method:
    """A parsed method: kind (dense, pa or a baseline), the PA options, the dense layers, and for
    a baseline the PA method whose density it matches."""

    def __init__(self, text):
        label, spec = text, text
        head = text.split("=", 1)[0]
        if "=" in text and ":" not in head and "@" not in head:
            label, spec = text.split("=", 1)
        self.label, self.spec = label, spec
        self.options, self.dense_layers, self.match, self.prefill_chunk = {}, set(), None, 0
        if spec.split(":", 1)[0] == "dense":
            self.kind = "dense"
            for item in filter(None, spec[len("dense") + 1:].split(",")):
                name, _, value = item.partition("=")
                if name != "prefill_chunk":
                    raise ValueError(f"method {text!r}: dense takes only prefill_chunk")
                self.prefill_chunk = int(value)
        elif "@" in spec:
            self.kind, target = spec.split("@", 1)
            if self.kind not in BASELINES:
                raise ValueError(f"method {text!r}: a baseline is one of {BASELINES}")
            self.match = Method(target)
            if self.match.kind not in ("pa", "perhead"):
                raise ValueError(f"method {text!r}: a baseline matches a pa method")
        elif spec.split(":", 1)[0] in ("pa", "perhead"):
            self.kind = spec.split(":", 1)[0]
            for item in filter(None, spec[len(self.kind) + 1:].split(",")):
                name, _, value = item.partition("=")
                if name == "dense_layers":
                    self.dense_layers = {int(x) for x in value.split("+")}
                elif name == "prefill_chunk":
                    self.prefill_chunk = int(value)
                elif name == "preset":
                    self.options[name] = value
                else:
                    kind = type(proxyattn.DEFAULTS[name]) if name in proxyattn.DEFAULTS else str
                    self.options[name] = value in ("1", "true", "True") if kind is bool else kind(value)
        else:
            raise ValueError(f"method {text!r}: expected dense, pa[:options], or BASELINE@pa[:options]")


_state = {"method": None, "record": None, "detail": False}


def generate(model, ids, method, **kwargs):
    """Greedy generation after the prefill of ids [batch, n]: in one forward, or in chunks of
    method.prefill_chunk tokens (all but the last through a DynamicCache, the last one by
    generate, which continues from the cache)."""
    c = method.prefill_chunk
    if not c or ids.shape[1] <= c:
        return model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **kwargs)
    cache = transformers.DynamicCache(config=model.config)
    for start in range(0, (ids.shape[1] - 1) // c * c, c):
        model(ids[:, start:start + c], past_key_values=cache, use_cache=True, logits_to_keep=1)
    return model.generate(ids, attention_mask=torch.ones_like(ids), past_key_values=cache, do_sample=False,
                          **kwargs)


def _perhead_mask(method, q, k, scale):
    """Each query head estimated alone (one proxy of its own), as one bool mask [Hq, Nb, Nb]."""
    hq, hkv, nb = q.shape[1], k.shape[1], -(-q.shape[0] // 128)
    masks = []
    for h in range(hq):
        kvh = h // (hq // hkv)
        m = proxyattn.estimate(q[:, h:h + 1], k[:, kvh:kvh + 1], scale, copy=False,
                               **{**method.options, "proxy_groups": 1})
        masks.append(from_csr(m.row_offsets, m.col_indices[:int(m.row_offsets[-1])], 1, nb)[0])
    return torch.stack(masks)


def _pa(method, q, k, v, scale, layer):
    """A PA method on one layer input: (out, lse, density)."""
    if layer in method.dense_layers:
        out, lse = proxyattn.dense_attention(q, k, v, scale, return_lse=True)
        return out, lse, 1.0
    if method.kind == "perhead" or "pooling" in method.options:
        mask = (_perhead_mask(method, q, k, scale) if method.kind == "perhead"
                else pooling.select(q, k, scale, **method.options))
        ro, ci = to_csr(mask)
        out, lse = proxyattn.sparse_attention(q, k, v, (ro, ci), scale, return_lse=True)
        return out, lse, density_of(mask)
    out, lse, stats = proxyattn.attention(q, k, v, scale, return_lse=True, return_stats=True, **method.options)
    return out, lse, stats["total_density"]


def _layer(q, k, v, scale, layer):
    """One sequence's prefill attention under the current method; returns out [n, hq, d]."""
    method, record = _state["method"], _state["record"]
    if method.kind in ("pa", "perhead"):
        out, lse, density = _pa(method, q, k, v, scale, layer)
    else:
        target = 1.0
        if layer in method.match.dense_layers:
            pass
        elif method.match.kind == "perhead":
            target = density_of(_perhead_mask(method.match, q, k, scale))
        else:
            _, stats = proxyattn.estimate(q, k, scale, return_stats=True, copy=False, **method.match.options)
            target = stats["total_density"]
        if method.kind == "static":
            match = match_density("static", target, q, k, block_size=128)
        else:
            match = match_density(method.kind, target, q, k, block_size=128, steps=24)
        ro, ci = to_csr(match.mask)
        out, lse = proxyattn.sparse_attention(q, k, v, (ro.to(q.device), ci.to(q.device)), scale, return_lse=True)
        density = match.density
    entry = {"density": float(density)}
    if _state["detail"]:
        dense, dense_lse = proxyattn.dense_attention(q, k, v, scale, return_lse=True)
        entry["recall"] = torch.exp(lse.float() - dense_lse.float()).nan_to_num(0.0).mean().item()
        entry["error"] = ((out.float() - dense.float()).norm() / dense.float().norm()).item()
    record.append(entry)
    return out


def _key(row):
    return (row["length"], row["task"], row["index"], row["method"])


def load_done(path):
    done = set()
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        done.add(_key(json.loads(line)))
                    except (json.JSONDecodeError, KeyError):
                        pass  # a line cut short by a crash: that result is redone
    return done


def batches(prompts, size):
    """Prompts of one length and task together (one answer budget), in index order."""
    groups = {}
    for p in prompts:
        groups.setdefault((p.task, p.max_new_tokens), []).append(p)
    for group in groups.values():
        for i in range(0, len(group), size):
            yield group[i:i + size]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("prompts", help="a folder from eval/build_prompts.py")
    ap.add_argument("--methods", nargs="+", default=["dense", "pa", "xattention@pa", "flexprefill@pa"])
    ap.add_argument("--lengths", type=int, nargs="*", help="only these prompt lengths")
    ap.add_argument("--limit", type=int, default=0, help="at most this many prompts per length (0: all)")
    ap.add_argument("--every", type=int, default=1,
                    help="every this many-th prompt of each length (the prompts go task by task: 3 spreads a "
                         "third of them over every task), before --limit")
    ap.add_argument("--only", nargs="*", default=[], metavar="TASK:INDEX",
                    help="only these prompts (for example those where two methods disagree), before --every")
    ap.add_argument("--batch", type=int, default=8, help="prompts per generate call")
    ap.add_argument("--detail", type=int, default=0,
                    help="per-layer recall and output error on the first N prompts of each length")
    ap.add_argument("--yarn", type=float, default=None,
                    help="extend the context this many times with YaRN (eval/load_model.py); the model's "
                         "name in the results gets +yarnF")
    ap.add_argument("--compile", action="store_true",
                    help="the rest of the model compiled (eval/load_model.compile_rest; give the methods labels "
                         "of their own, such as dense-compiled=dense, since results resume by label)")
    ap.add_argument("--out", required=True, help="JSON lines, appended to and resumed from")
    args = ap.parse_args()

    methods = [Method(m) for m in args.methods]
    corpus, spec = read_prompts(args.prompts)
    prompts = [tasks.Prompt(**p) for p in spec["prompts"]]
    lengths = sorted({p.length for p in prompts if not args.lengths or p.length in args.lengths}, reverse=True)
    done = load_done(args.out)
    if args.every < 1:
        raise SystemExit(f"--every must be at least 1, got {args.every}")
    only = {(t, int(i)) for t, _, i in (x.rpartition(":") for x in args.only)}
    if only:
        prompts = [p for p in prompts if (p.task, p.index) in only]
    todo = {n: [p for p in prompts if p.length == n][::args.every][:args.limit or None] for n in lengths}
    left = sum(1 for n in lengths for p in todo[n] for m in methods
               if (n, p.task, p.index, m.label) not in done)
    print(f"{sum(len(v) for v in todo.values())} prompts x {len(methods)} methods, {left} results to compute",
          flush=True)
    if left == 0:
        return

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load(args.model_dir, "bfloat16" if device == "cuda" else "float32", device, yarn=args.yarn)
    if args.compile:
        print(f"compiled {compile_rest(model)} modules of the model (MLPs, norms, rotary)", flush=True)
    pat.register(min_prefill_tokens=2)  # every prompt's prefill goes through the method under test
    transformers.AttentionInterface.register("pa_eval", pat.attention_function(_layer))
    # The integration's mask function: sdpa's, but none for a long prefill after a cache (a chunk),
    # which the attention function then runs bottom-right aligned.
    transformers.AttentionMaskInterface.register("pa_eval", pat._mask)
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    name = os.path.splitext(find_gguf(args.model_dir))[0] + (f"+yarn{args.yarn:g}" if args.yarn else "")

    t_start, computed = time.time(), 0
    with open(args.out, "a") as out_file:
        for n in lengths:
            seen = 0
            for batch in batches(todo[n], args.batch):
                ids = torch.tensor([p.ids(corpus) for p in batch], device=device)
                for m in methods:
                    if all((n, p.task, p.index, m.label) in done for p in batch):
                        continue
                    _state.update(method=m, record=[], detail=seen < args.detail)
                    model.set_attn_implementation("sdpa" if m.kind == "dense" else "pa_eval")
                    t0 = time.time()
                    with torch.no_grad():
                        gen = generate(model, ids, m, max_new_tokens=batch[0].max_new_tokens,
                                       pad_token_id=spec["pad_token_id"])
                    seconds = time.time() - t0
                    layers = _state["record"]  # per sequence per layer, in call order
                    per_seq = [layers[i::len(batch)] for i in range(len(batch))] if layers else [[]] * len(batch)
                    right = 0
                    for p, row_ids, lay in zip(batch, gen[:, ids.shape[1]:].tolist(), per_seq):
                        text = tokenizer.decode(row_ids, skip_special_tokens=True)
                        row = dict(model=name, gpu=gpu, length=n, task=p.task, index=p.index, book=p.book,
                                   depths=p.depths, method=m.label, spec=m.spec, answers=p.answers,
                                   text=text.strip()[:400], correct=tasks.is_correct(text, p.answers),
                                   score=tasks.score(text, p.answers),
                                   density=sum(x["density"] for x in lay) / len(lay) if lay else 1.0,
                                   layers=lay, seconds=seconds / len(batch), compiled=args.compile)
                        right += row["correct"]
                        out_file.write(json.dumps(row) + "\n")
                    out_file.flush()
                    computed += len(batch)
                    rate = (time.time() - t_start) / computed
                    left -= len(batch)
                    print(f"[{n}] {seen + len(batch):>3}/{len(todo[n])} {batch[0].task:>18} {m.label:>14}: "
                          f"{right}/{len(batch)} right, density {row['density']:.3f}, {seconds:5.1f} s | "
                          f"{time.time() - t_start:5.0f} s, about {rate * left:5.0f} s left", flush=True)
                seen += len(batch)


if __name__ == "__main__":
    main()
