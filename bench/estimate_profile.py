"""One estimate on random bf16 inputs (Llama-3.1-8B shapes), inside cudaProfilerStart/Stop, so that
ncu or nsys record just its kernels (the warm-up call runs outside):

  ncu --profile-from-start off --metrics gpu__time_duration.sum python3 bench/estimate_profile.py 32768

PROXYATTN_STAGE1 / PROXYATTN_STAGE2 pick the estimator's kernels as in the library."""
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "python"))
import proxyattn_ctypes as pa  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 32768
hq, hkv, d = 32, 8, 128
gen = torch.Generator(device="cuda").manual_seed(n)
q = torch.randn(n, hq, d, device="cuda", dtype=torch.bfloat16, generator=gen)
k = torch.randn(n, hkv, d, device="cuda", dtype=torch.bfloat16, generator=gen)
plan = pa.Plan(hq, hkv, d, torch.bfloat16, "cuda", [0, n])
plan.estimate(q, k, copy=False)
torch.cuda.synchronize()
torch.cuda.profiler.start()
plan.estimate(q, k, copy=False)
torch.cuda.synchronize()
torch.cuda.profiler.stop()
plan.close()
