"""End-to-end prefill timing: time to first token of a transformers causal LM with sdpa attention
against ProxyAttn, the share of the prefill spent in attention and in the estimator, and the peak
GPU memory of each.

Random weights (the default, a Llama-3.1-8B architecture in bf16) have no real attention pattern,
so ProxyAttn runs there at a FIXED density: the real estimator runs (its time counts), then the
sparse kernel runs on a mask that keeps a fixed share of each row's causal blocks (sink, diagonal
and random others). With --gguf, a real model runs through attn_implementation="proxyattn" with
the estimator's own masks, and the measured density is reported; --prompts gives it the
evaluation's prompts (real text) instead of random tokens, --yarn its long-context rope scaling.

Modes: sdpa (transformers' sdpa, torch's choice of kernel), sdpa-cudnn and sdpa-flash (sdpa held
to that backend), none (attention replaced by a copy of V: the time of everything else, so
attention share = 1 - none / mode), estimate (none plus ProxyAttn's estimator: estimator share =
(estimate - none) / proxyattn), dense (our dense kernel), proxyattn (real masks) and fixed-D
(fixed density D).

--compile runs every mode a second time with the rest of the model's elementwise work fused, as
serving engines fuse it: torch.compile (inductor, dynamic shapes) of each decoder layer's MLP and
two norms, the final norm and the rotary embedding; attention stays outside the compiled parts, so
each mode calls the same attention function as in eager (transformers' own mask handling under
compile would build a dense mask for sdpa).

    python3 bench/e2e_prefill.py --lengths 131072 262144 --modes sdpa-cudnn sdpa-flash none estimate fixed-0.2
    python3 bench/e2e_prefill.py --gguf --yarn 4 --prompts .model/eval/qwen .model/eval/qwen_long \
        --lengths 32672 65440 130976 --modes sdpa-cudnn sdpa-flash none estimate dense proxyattn --compile
"""
import argparse
import contextlib
import json
import math
import os
import sys
import time

import torch
import transformers

import transformers.masking_utils

import proxyattn
import proxyattn.transformers as pat

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "eval"))
import load_model  # noqa: E402  (eval/: the real model's loader, compile_rest)

LLAMA_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                  original_max_position_embeddings=8192))

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_fixed = {"density": None, "masks": {}}
_stats = {"density": []}


def fixed_mask(n, heads, density, device, block=128):
    """CSR mask keeping ceil(density * (m + 1)) blocks of row m (at least sink and diagonal)."""
    key = (n, heads, density)
    if key not in _fixed["masks"]:
        g = torch.Generator().manual_seed(0)
        nb = math.ceil(n / block)
        rows, offsets = [], [0]
        for m in range(nb):
            keep = max(min(m + 1, 2), math.ceil(density * (m + 1)))
            for _ in range(heads):
                others = (torch.randperm(m - 1, generator=g)[: max(0, keep - 2)] + 1).tolist() if m > 1 else []
                cols = sorted({0, m, *others})
                rows += cols
                offsets.append(len(rows))
        _fixed["masks"][key] = (torch.tensor(offsets, dtype=torch.int64, device=device),
                                torch.tensor(rows, dtype=torch.int32, device=device), len(rows) / (heads * nb * (nb + 1) / 2))
    return _fixed["masks"][key]


def estimate_only(q, k, v, scale, layer=None):
    """The estimator, then no attention (a copy of V's heads, as mode none)."""
    proxyattn.estimate(q, k, scale, copy=False, **pat._settings["options"])
    return v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)


def fixed(q, k, v, scale, layer=None):
    """Real estimator, then the sparse kernel on a fixed-density mask (random-weight timing)."""
    proxyattn.estimate(q, k, scale, copy=False)  # the estimator's cost, its mask unused
    ro, ci, _ = fixed_mask(q.shape[0], q.shape[1], _fixed["density"], q.device)
    return proxyattn.sparse_attention(q, k, v, (ro, ci), scale)


def measured(q, k, v, scale, layer=None):
    """ProxyAttn with the estimator's own masks, recording each layer's density."""
    out, stats = proxyattn.attention(q, k, v, scale, return_stats=True, **pat._settings["options"])
    _stats["density"].append(stats["total_density"])
    return out


def attention_none(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """No attention: V's heads broadcast to the query heads (a copy of the output's size)."""
    r = query.shape[1] // value.shape[1]
    return value.repeat_interleave(r, dim=1).transpose(1, 2).contiguous(), None


def register_modes():
    modes = (("pa_fixed", pat.attention_function(fixed)), ("pa_measured", pat.attention_function(measured)),
             ("pa_dense", pat.attention_function(lambda q, k, v, scale, layer: proxyattn.dense_attention(q, k, v, scale))),
             ("pa_none", attention_none), ("pa_estimate", pat.attention_function(estimate_only)))
    for name, fn in modes:
        transformers.AttentionInterface.register(name, fn)
        transformers.AttentionMaskInterface.register(name, transformers.masking_utils.sdpa_mask)


def build_model(args):
    if args.gguf:
        model, _ = load_model.load(args.model_dir, torch.bfloat16, DEVICE, yarn=args.yarn)
        return model
    shape = dict(LLAMA_8B)
    if args.tiny:  # a smoke test of this script (CPU or GPU), not a measurement
        # head dim 64: one the CUDA kernels take, so that ProxyAttn (not sdpa) runs on a GPU too
        shape.update(hidden_size=512, intermediate_size=512, num_hidden_layers=2, num_attention_heads=8,
                     num_key_value_heads=2, vocab_size=1000)
    config = transformers.LlamaConfig(**shape)
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model.eval()


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def time_prefill(model, ids, repeats, backend=None):
    """(best seconds of `repeats` runs after one warm-up, peak GPU bytes allocated); backend holds
    sdpa to one torch backend (an unsupported one raises RuntimeError)."""
    from torch.nn.attention import sdpa_kernel, SDPBackend
    backends = {"cudnn": [SDPBackend.CUDNN_ATTENTION], "flash": [SDPBackend.FLASH_ATTENTION]}
    times = []
    with sdpa_kernel(backends[backend]) if backend else contextlib.nullcontext():
        for i in range(repeats + 1):  # the first run warms up (plans, allocator, kernels)
            sync()
            if DEVICE == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            with torch.no_grad():
                model(ids, logits_to_keep=1, use_cache=True)
            sync()
            if i:
                times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if DEVICE == "cuda" else 0
    return min(times), peak


def prompt_ids(folders, n):
    """The token ids of the first evaluation prompt of exactly n tokens in the given folders."""
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "eval"))
    import tasks
    from build_prompts import read_prompts
    for folder in folders:
        corpus, spec = read_prompts(folder)
        for p in spec["prompts"]:
            if p["length"] == n:
                return tasks.Prompt(**p).ids(corpus), p["task"]
    sys.exit(f"--prompts {folders}: no prompt of {n} tokens")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[32768, 65536, 131072])
    p.add_argument("--modes", nargs="+", default=["sdpa", "none", "dense", "fixed-0.1", "fixed-0.2"])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--gamma", type=float, default=None, help="ProxyAttn's gamma (default: the library's)")
    p.add_argument("--yarn", type=float, default=None, help="with --gguf: YaRN factor (eval/load_model.py)")
    p.add_argument("--prompts", nargs="+", help="with --gguf: folders of evaluation prompts (real text)")
    p.add_argument("--gguf", action="store_true", help="load the real model of --model-dir (eval/load_model.py)")
    p.add_argument("--model-dir", default="/tmp/proxyattn_model")
    p.add_argument("--tiny", action="store_true", help="a 2-layer model: checks the script runs")
    p.add_argument("--compile", action="store_true",
                   help="run the modes again with the rest of the model compiled (see above)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    register_modes()
    pat.register(min_prefill_tokens=2, **({} if args.gamma is None else {"gamma": args.gamma}))
    model = build_model(args)
    # proxyattn is timed through the integration as users register it; its density comes from one
    # more, untimed prefill with the stats (each layer's stats read back to the host: a synchronisation).
    impl = {"sdpa": "sdpa", "sdpa-cudnn": "sdpa", "sdpa-flash": "sdpa", "none": "pa_none", "dense": "pa_dense",
            "proxyattn": pat.NAME, "estimate": "pa_estimate"}
    rows = []
    variants = [False, True] if args.compile else [False]
    for compiled in variants:
        if compiled:
            print(f"compiled {load_model.compile_rest(model)} modules of the model (MLPs, norms, rotary)", flush=True)
        run_lengths(args, model, impl, compiled, rows)
    report(args, rows, variants)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(gpu=torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", torch=torch.__version__,
                           transformers=transformers.__version__, commit=os.environ.get("PROXYATTN_COMMIT"),
                           model="gguf:" + args.model_dir if args.gguf else "Llama-3.1-8B architecture, random bf16",
                           yarn=args.yarn, prompts=args.prompts,
                           rows=rows), f, indent=1)


def run_lengths(args, model, impl, compiled, rows):
    for n in args.lengths:
        if args.prompts:
            tokens, task = prompt_ids(args.prompts, n)
            ids = torch.tensor([tokens], device=DEVICE)
            print(f"{n} tokens: the first {task} prompt", flush=True)
        else:
            ids = torch.randint(0, model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(n)).to(DEVICE)
        for mode in args.modes:
            density = None
            if mode.startswith("fixed-"):
                _fixed["density"] = float(mode.split("-", 1)[1])
                model.set_attn_implementation("pa_fixed")
                density = fixed_mask(n, model.config.num_attention_heads, _fixed["density"], DEVICE)[2]
            else:
                model.set_attn_implementation(impl[mode])
            _stats["density"].clear()
            backend = mode.split("-", 1)[1] if mode.startswith("sdpa-") else None
            try:
                seconds, peak = time_prefill(model, ids, args.repeats, backend)
            except RuntimeError as e:  # a backend that does not take this shape: say so, go on
                print(f"{n:>7} {mode:>10} not run: {str(e).splitlines()[0][:160]}", flush=True)
                continue
            if mode == "proxyattn":
                model.set_attn_implementation("pa_measured")
                with torch.no_grad():
                    model(ids, logits_to_keep=1, use_cache=True)
                if not _stats["density"]:
                    sys.exit(f"mode proxyattn: no layer ran ProxyAttn at {n} tokens (proxyattn.transformers sent "
                             "every call to sdpa: see its rules for head dims, dtypes and masks)")
                density = sum(_stats["density"]) / len(_stats["density"])
            rows.append(dict(tokens=n, mode=mode, compiled=compiled, seconds=seconds, density=density, peak_bytes=peak))
            print(f"{n:>7} {mode:>10}{' compiled' if compiled else ''} {seconds * 1e3:9.1f} ms  peak {peak / 2**30:6.2f} GiB"
                  + (f"  density {density:.3f}" if density else ""), flush=True)

def report(args, rows, variants):
    """Speed-ups against sdpa (cuDNN where it ran) of the same variant, attention and estimator
    shares, peak memory."""
    print("\n| tokens | compiled | mode | density | TTFT | speed-up vs sdpa | attention share | estimator share "
          "| peak memory |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.lengths:
        for compiled in variants:
            mine = [r for r in rows if r["tokens"] == n and r["compiled"] == compiled]
            by = {r["mode"]: r for r in mine}
            base = by.get("sdpa-cudnn") or by.get("sdpa") or by.get("sdpa-flash")
            rest, est = by.get("none"), by.get("estimate")
            for r in mine:
                share = "" if not rest or r["mode"] in ("none", "estimate") else f"{1 - rest['seconds'] / r['seconds']:.0%}"
                est_share = (f"{(est['seconds'] - rest['seconds']) / r['seconds']:.1%}"
                             if est and rest and (r["mode"] == "proxyattn" or r["mode"].startswith("fixed-")) else "")
                speed = f"{base['seconds'] / r['seconds']:.2f}x" if base else ""
                dens = f"{r['density']:.1%}" if r["density"] else ("100%" if r["mode"].startswith(("sdpa", "dense")) else "-")
                memory = f"{r['peak_bytes'] / 2**30:.2f} GiB" + (f" ({r['peak_bytes'] / base['peak_bytes']:.3f}x)"
                                                               if base and base["peak_bytes"] else "")
                print(f"| {n} | {'yes' if compiled else 'no'} | {r['mode']} | {dens} | {r['seconds'] * 1e3:.0f} ms "
                      f"| {speed} | {share} | {est_share} | {memory} |")


if __name__ == "__main__":
    main()
