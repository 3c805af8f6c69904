"""Time each baseline selector on random inputs, on the GPU when there is one, else the CPU.

    python3 eval/baselines/bench_selectors.py --tokens 32768
    python3 eval/baselines/bench_selectors.py --tokens 4096 --device cpu

Prints, per selector, the median time of the estimate (scores, done once), of one threshold
application, and of match_density (the estimate plus the bisection), with the density reached.
Default shapes are Llama-3.1-8B's (32 q heads, 8 kv heads, head dim 128).
"""
import argparse
import pathlib
import statistics
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # the repository root
from eval.baselines import (density, flexprefill_estimate, match_density, static_mask,  # noqa: E402
                            to_csr, xattention_estimate)


def timed(fn, device, repeats):
    """Median seconds of fn() over repeats runs after one warm-up run; returns (seconds, result)."""
    out = fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--q-heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--stride", type=int, default=8, help="XAttention stride")
    ap.add_argument("--target", type=float, default=0.3, help="density for match_density")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                    help="default: bf16 on a GPU, fp32 on the CPU")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--patterns", nargs="+", default=["last_block", "vertical_slash", "auto"])
    a = ap.parse_args()

    device = torch.device(a.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        a.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    g = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(a.tokens, a.q_heads, a.head_dim, generator=g, device=device).to(dtype)
    k = torch.randn(a.tokens, a.kv_heads, a.head_dim, generator=g, device=device).to(dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, N={a.tokens}, Hq={a.q_heads}, Hkv={a.kv_heads}, D={a.head_dim}, "
          f"B={a.block}, {dtype}, median of {a.repeats}")
    print(f"{'selector':<28}{'estimate ms':>12}{'mask_at ms':>12}{'match ms':>10}{'density':>9}")

    runs = [(f"flexprefill/{p}", "flexprefill", 0.95,
             lambda p=p: flexprefill_estimate(q, k, block_size=a.block, pattern=p), {"pattern": p})
            for p in a.patterns]
    runs.append((f"xattention/stride{a.stride}", "xattention", 0.9,
                 lambda: xattention_estimate(q, k, block_size=a.block, stride=a.stride),
                 {"stride": a.stride}))
    for label, selector, threshold, estimate, options in runs:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t_est, sel = timed(estimate, device, a.repeats)
        t_mask, mask = timed(lambda: sel.mask_at(threshold), device, a.repeats)
        t_match, res = timed(lambda: match_density(selector, a.target, q, k, block_size=a.block,
                                                   **options), device, 1)
        peak = (f"  peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
                if device.type == "cuda" else "")
        print(f"{label:<28}{t_est * 1e3:>12.1f}{t_mask * 1e3:>12.2f}{t_match * 1e3:>10.1f}"
              f"{density(mask):>9.3f}  (at {threshold}; matched {res.density:.3f}){peak}")
    t_static, mask = timed(lambda: static_mask(a.tokens, a.q_heads, 8, block_size=a.block,
                                               device=device), device, a.repeats)
    print(f"{'static/window8':<28}{t_static * 1e3:>12.2f}{'':>12}{'':>10}{density(mask):>9.3f}")
    t_csr, _ = timed(lambda: to_csr(mask), device, a.repeats)
    print(f"to_csr: {t_csr * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
