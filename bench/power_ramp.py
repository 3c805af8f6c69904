#!/usr/bin/env python3
"""How a kernel's rate falls from an idle board to the sustained one under the power cap.

After --idle seconds with nothing running, one case runs --calls times back to back, each call
between its own CUDA events (queued, no synchronisation between calls). nvidia-smi samples the
SM clock, board power and temperature every 20 ms meanwhile. Printed: the time and TFLOP/s of
calls 1, 2, 3, 5, 10, ... and the last, and the median clock and power of the samples in the first
and the last 20% of the loop. A rate that starts above the sustained one and falls as the board
reaches its cap is a clock limit, not a per-cycle one (the kernel's cycles do not change).
  PROXYATTN_LIB=.device/libproxyattn_c.so python3 bench/power_ramp.py --case sparse --density 0.1
"""
import argparse
import statistics
import subprocess
import time

import torch

import cuda_bench as cb


def smi_start(path):
    return subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu",
                             "--format=csv,noheader,nounits", "-lms", "20"], stdout=open(path, "w"))


def smi_samples(path, t0, t1):
    """(clock MHz, power W, temperature C) of the samples between wall times t0 and t1."""
    out = []
    for line in open(path):
        parts = [x.strip() for x in line.split(",")]
        if len(parts) != 4:
            continue
        try:
            stamp = time.mktime(time.strptime(parts[0].split(".")[0], "%Y/%m/%d %H:%M:%S"))
            stamp += float("0." + parts[0].split(".")[1]) if "." in parts[0] else 0.0
            sample = (float(parts[1]), float(parts[2]), float(parts[3]))
        except ValueError:
            continue
        if t0 <= stamp <= t1:
            out.append(sample)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", choices=["sparse", "dense", "cudnn"], default="sparse")
    ap.add_argument("--length", type=int, default=131072)
    ap.add_argument("--density", type=float, default=0.1)
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--smi", default="/tmp/power_ramp_smi.csv")
    args = ap.parse_args()
    hq, hkv, d = cb.SHAPES["llama3.1-8b"]
    n = args.length
    gen, q, k, v, out, plan = cb.llama_layer(n)
    pairs = hq * n * (n + 1) // 2
    if args.case == "sparse":
        ro, ci = cb.to_csr(cb.random_keep(n // cb.BLOCK, hq, args.density, gen))
        pairs = cb.kept_pairs(ro, ci, n, hq)
        fn = lambda: plan.sparse_attention(q, k, v, ro, ci, out)  # noqa: E731
    elif args.case == "dense":
        fn = lambda: plan.dense_attention(q, k, v, out)  # noqa: E731
    else:
        # As cuda_bench.py calls it: [1, H, N, D], K and V repeated to the query heads.
        from torch.nn.attention import SDPBackend, sdpa_kernel
        qt, kt, vt = (x.transpose(0, 1).unsqueeze(0).contiguous() for x in (q, k, v))
        kt, vt = (x.repeat_interleave(hq // hkv, 1) for x in (kt, vt))

        def fn():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=True)
    fn()  # compile, allocate
    torch.cuda.synchronize()
    smi = smi_start(args.smi)
    time.sleep(args.idle)
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2 * args.calls)]
    t0 = time.time()
    for i in range(args.calls):
        ev[2 * i].record()
        fn()
        ev[2 * i + 1].record()
    torch.cuda.synchronize()
    t1 = time.time()
    time.sleep(0.1)
    smi.terminate()
    smi.wait()
    ms = [ev[2 * i].elapsed_time(ev[2 * i + 1]) for i in range(args.calls)]
    flop = 4 * d * pairs
    label = f"{args.case}" + (f" {args.density}" if args.case == "sparse" else "")
    print(f"llama3.1-8b n={n} {label}: {args.calls} calls back to back after {args.idle:.0f} s idle "
          f"({t1 - t0:.2f} s), {flop / 1e12:.2f} TFLOP a call")
    shown = sorted({1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, args.calls} & set(range(1, args.calls + 1)))
    for c in shown:
        print(f"  call {c:5d}: {ms[c - 1]:9.3f} ms {flop / ms[c - 1] / 1e9:6.0f} TFLOP/s")
    tail = ms[-max(1, args.calls // 5):]
    print(f"  median of the last 20%: {statistics.median(tail):.3f} ms {flop / statistics.median(tail) / 1e9:.0f} TFLOP/s")
    span = t1 - t0
    for name, a, b in (("first 20%", t0, t0 + 0.2 * span), ("last 20%", t1 - 0.2 * span, t1)):
        s = smi_samples(args.smi, a, b)
        if s:
            print(f"  smi {name}: {len(s)} samples, median SM clock {statistics.median(x[0] for x in s):.0f} MHz, "
                  f"power {statistics.median(x[1] for x in s):.0f} W, temperature {statistics.median(x[2] for x in s):.0f} C")
    plan.close()


if __name__ == "__main__":
    main()
