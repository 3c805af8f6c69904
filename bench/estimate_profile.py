"""The estimate alone on random bf16 inputs (Llama-3.1-8B shapes, one proxy group by default).

  python3 bench/estimate_profile.py --time 8192 32768 131072     # median ms of 20 calls per length
  ncu --profile-from-start off --metrics gpu__time_duration.sum python3 bench/estimate_profile.py 32768

Without --time, one estimate per length runs inside cudaProfilerStart/Stop, so that ncu or nsys
record just its kernels (the warm-up call runs outside). PROXYATTN_STAGE1, PROXYATTN_STAGE1_SPLIT
and PROXYATTN_STAGE2 pick the estimator's kernels as in the library."""
import argparse
import pathlib
import statistics
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "python"))
import proxyattn_ctypes as pa  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("lengths", type=int, nargs="*", default=[32768])
ap.add_argument("--time", action="store_true", help="print the median time of --reps calls")
ap.add_argument("--reps", type=int, default=20)
args = ap.parse_args()
hq, hkv, d = 32, 8, 128
for n in args.lengths:
    gen = torch.Generator(device="cuda").manual_seed(n)
    q = torch.randn(n, hq, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    k = torch.randn(n, hkv, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    plan = pa.Plan(hq, hkv, d, torch.bfloat16, "cuda", [0, n])
    plan.estimate(q, k, copy=False)
    torch.cuda.synchronize()
    if args.time:
        times = []
        for _ in range(args.reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            plan.estimate(q, k, copy=False)
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        print(f"estimate n={n:7d} {statistics.median(times):8.3f} ms", flush=True)
    else:
        torch.cuda.profiler.start()
        plan.estimate(q, k, copy=False)
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
    plan.close()
