#!/usr/bin/env python3
"""Where a call's time goes beyond its kernels: one Llama-3.1-8B layer at one length, timed three
ways. single: cuda_bench.py's rule at these lengths (events around one call, synchronised after
each); queued: each call between its own events with no synchronisation in between, so that the
host enqueues ahead and the events see GPU time only; batch: several calls between one pair.
A gap between single and queued is host time inside the timed region (Python, the C API, the
launch setup), not kernel time. --loop N then runs each call N times back to back (for sampling
clocks and power beside it: nvidia-smi --query-gpu=clocks.sm,power.draw --format=csv -lms 50).
--profile N: N calls each back to back under torch.profiler, with the GPU time of every kernel
they launch (whether the attention kernel alone takes the call's time).
  PROXYATTN_LIB=.device/libproxyattn_c.so python3 bench/launch_gap.py --length 131072 --density 0.1
"""
import argparse
import datetime
import statistics

import torch

import cuda_bench as cb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--length", type=int, default=131072)
    ap.add_argument("--density", type=float, default=0.1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--loop", type=int, default=0)
    ap.add_argument("--profile", type=int, default=0)
    args = ap.parse_args()
    hq = cb.SHAPES["llama3.1-8b"][0]
    n = args.length
    gen, q, k, v, out, plan = cb.llama_layer(n)
    ro, ci = cb.to_csr(cb.random_keep(n // cb.BLOCK, hq, args.density, gen))
    calls = {"dense": lambda: plan.dense_attention(q, k, v, out),
             f"sparse {args.density}": lambda: plan.sparse_attention(q, k, v, ro, ci, out)}
    print(f"llama3.1-8b n={n}: median ms per call")
    print(f"{'call':16s} {'single':>9s} {'queued':>9s} {'batch':>9s}")
    for name, fn in calls.items():
        fn()
        torch.cuda.synchronize()
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(2 * args.reps)]
        single = []
        for r in range(args.reps):
            ev[0].record()
            fn()
            ev[1].record()
            ev[1].synchronize()
            single.append(ev[0].elapsed_time(ev[1]))
        for r in range(args.reps):
            ev[2 * r].record()
            fn()
            ev[2 * r + 1].record()
        torch.cuda.synchronize()
        queued = [ev[2 * r].elapsed_time(ev[2 * r + 1]) for r in range(args.reps)]
        ev[0].record()
        for r in range(args.reps):
            fn()
        ev[1].record()
        torch.cuda.synchronize()
        batch = ev[0].elapsed_time(ev[1]) / args.reps
        print(f"{name:16s} {statistics.median(single):9.3f} {statistics.median(queued):9.3f} {batch:9.3f}", flush=True)
    for name, fn in calls.items():
        if args.loop:
            t0 = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
            ev[0].record()
            for _ in range(args.loop):
                fn()
            ev[1].record()
            torch.cuda.synchronize()
            t1 = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
            print(f"{name}: {args.loop} calls back to back, {ev[0].elapsed_time(ev[1]) / args.loop:.3f} ms each"
                  f" ({t0} to {t1})", flush=True)
    for name, fn in calls.items():
        if args.profile:
            profile(name, fn, args.profile)
    plan.close()


def profile(name, fn, n):
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    # The timeline of the last two calls (host API calls and GPU work, us from the first shown):
    # a gap before a kernel says whether the GPU waited for the host.
    evs = sorted((e for e in prof.events() if e.time_range.end > e.time_range.start),
                 key=lambda e: e.time_range.start)
    kernels = [e for e in evs if "sparse_attention" in e.name and "kernel" in e.name and e.device_type.name == "CUDA"]
    if len(kernels) >= 2:
        t0 = kernels[-2].time_range.start
        print(f"{name}: timeline from the start of the last but one attention kernel (us, start, duration):")
        for e in evs:
            if e.time_range.end >= t0:
                print(f"  {e.device_type.name:4s} {e.time_range.start - t0:12.1f} {e.time_range.end - e.time_range.start:12.1f}"
                      f"  {e.name[:80]}")
    print(f"{name}: {n} calls under torch.profiler; kernels (count, mean us, total ms):")
    for e in prof.key_averages():
        total = getattr(e, "device_time_total", None)
        if total is None:
            total = getattr(e, "cuda_time_total", 0.0)
        if total > 0 and e.count:
            print(f"  {e.key[:70]:70s} {e.count:5d} {total / e.count:11.1f} {total / 1e3:9.2f}", flush=True)


if __name__ == "__main__":
    main()
