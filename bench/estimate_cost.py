"""What each estimator setting costs, against cuDNN dense attention in the same run (H200, bf16,
random inputs, Llama-3.1-8B attention shape by default: 32 q heads, 8 kv heads, D 128).

    python3 bench/estimate_cost.py --lengths 32768 131072 --json estimate_cost.json

Settings (proxyattn option sets over the library defaults):
- default: the library's defaults (proxy_groups 0: 2 proxies for 8 kv heads);
- previous default: one proxy, row_ratio, gamma 0.95, no head preferences;
- exact/columns off: the defaults without exact_last_block and head_columns (their own cost);
- 16 head columns: half the defaults' columns (the defaults until 2026-12-04);
- one proxy per kv head: proxy_groups = kv heads (8);
- stride 2 and stride 1: proxies on every 2nd or every token. Stride on the queries only (every
  key scored) does (N/s) * N products, as many as stride sqrt(s) on both: at s = 4, stride 2;
- a proxy per query head: proxy_groups = q heads, timed on the same queries with the keys
  repeated to every query head (stage 1 then has Hq proxies, stage 2 is unchanged): what a
  per-head agreement test costs when every head disagrees.
Median of --reps calls after a warm-up, several input sets in turn (METHOD.md); the settings take
their calls in turn, one each per round, so that none runs first after cuDNN's long calls (timed
one after the other, the first setting came out about 12% slower at 128K, whichever it was:
bench/results/2026-12-02_h200_accuracy/estimate_cost.txt). --kernels adds each kernel's time in
the default estimate (torch.profiler).
"""
import argparse
import json
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import proxyattn

SETTINGS = [
    ("default", {}),
    ("previous default", dict(proxy_groups=1, budget_mode="row_ratio", gamma=0.95, exact_last_block=False,
                              head_columns=0)),
    ("exact/columns off", dict(exact_last_block=False, head_columns=0)),
    ("16 head columns", dict(head_columns=16)),
    ("one proxy per kv head", dict(proxy_groups=-1)),   # -1: resolved to the kv head count below
    ("stride 2 (= query-only stride 4)", dict(stride=2)),
    ("stride 1", dict(stride=1)),
    ("a proxy per query head", dict(proxy_groups=-2)),  # -2: every query head, keys repeated
]


def call_ms(fn, args):
    """One call's device time (ms), between two events."""
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    fn(*args)
    b.record()
    b.synchronize()
    return a.elapsed_time(b)


def median_ms(fn, sets, reps):
    return round_robin_ms([(fn, sets)], reps)[0]


def round_robin_ms(calls, reps):
    """Median ms of each (fn, sets) in calls, timed one call each per round."""
    for fn, sets in calls:
        for i in range(3):
            fn(*sets[i % len(sets)])
    torch.cuda.synchronize()
    times = [[] for _ in calls]
    for r in range(reps):
        for t, (fn, sets) in zip(times, calls):
            t.append(call_ms(fn, sets[r % len(sets)]))
    return [statistics.median(t) for t in times]


def kernel_table(q, k, reps=5):
    """Each CUDA kernel's mean time in the default estimate (torch.profiler), longest first."""
    from torch.profiler import ProfilerActivity, profile
    proxyattn.estimate(q, k, copy=False)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            proxyattn.estimate(q, k, copy=False)
        torch.cuda.synchronize()
    rows = [(e.key, e.self_device_time_total / reps / 1000) for e in prof.key_averages() if e.self_device_time_total > 0]
    rows.sort(key=lambda r: -r[1])
    total = sum(ms for _, ms in rows)
    for name, ms in rows:
        short = name.replace("(anonymous namespace)::", "").split("(")[0].split("<")[0].split("::")[-1].strip()
        print(f"    {short:40s} {ms:8.3f} ms  {100 * ms / total:5.1f}%")
    return [dict(kernel=name, ms=ms) for name, ms in rows]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072])
    ap.add_argument("--heads", type=int, nargs=3, default=[32, 8, 128], metavar=("HQ", "HKV", "D"))
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--json")
    ap.add_argument("--kernels", action="store_true", help="also each kernel's time in the default estimate")
    args = ap.parse_args()
    hq, hkv, d = args.heads
    rows = []
    for n in args.lengths:
        g = torch.Generator(device="cuda").manual_seed(n)
        sets = [tuple(torch.randn(n, h, d, device="cuda", dtype=torch.bfloat16, generator=g) for h in (hq, hkv, hkv))
                for _ in range(2)]
        # cuDNN's layout [1, H, N, D], K and V repeated to the query heads (GQA), as bench/cuda_bench.py.
        peer = [tuple(x.repeat_interleave(hq // x.shape[1], 1).transpose(0, 1).unsqueeze(0).contiguous() for x in s)
                for s in sets]

        def cudnn(q, k, v):
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        dense = median_ms(cudnn, peer, args.reps)
        rows.append(dict(n=n, setting="cuDNN dense attention", ms=dense, share=1.0))
        print(f"{n:7d}  {'cuDNN dense attention':34s} {dense:9.3f} ms", flush=True)
        calls = []  # (name, options, fn, input sets)
        for name, options in SETTINGS:
            options = dict(options)
            use = sets
            if options.get("proxy_groups") == -1:
                options["proxy_groups"] = hkv
            elif options.get("proxy_groups") == -2:
                options["proxy_groups"] = hq
                use = [(q, k.repeat_interleave(hq // hkv, 1), v) for q, k, v in sets]
            calls.append((name, options, lambda q, k, v, o=options: proxyattn.estimate(q, k, copy=False, **o), use))
        times = round_robin_ms([(fn, use) for _, _, fn, use in calls], args.reps)
        for (name, options, _, _), ms in zip(calls, times):
            rows.append(dict(n=n, setting=name, options=options, ms=ms, share=ms / dense))
            print(f"{n:7d}  {name:34s} {ms:9.3f} ms  {100 * ms / dense:6.2f}% of cuDNN dense", flush=True)
        del calls
        if args.kernels:
            print(f"{n:7d}  the default estimate's kernels (torch.profiler, mean of 5):")
            rows.append(dict(n=n, setting="default, per kernel", kernels=kernel_table(*sets[0][:2])))
        del sets, peer
        torch.cuda.empty_cache()
    print("\n| tokens | setting | estimate | share of cuDNN dense |\n|---|---|---|---|")
    for r in rows:
        if "ms" in r:
            print(f"| {r['n']} | {r['setting']} | {r['ms']:.3f} ms | {100 * r['share']:.2f}% |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(gpu=torch.cuda.get_device_name(), heads=args.heads, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
