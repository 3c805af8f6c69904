"""How much of the sparse kernel's time at a given density is the cost of where the kept blocks
lie. Three masks with the same density and the same count of kept blocks per row on average,
timed as bench/cuda_bench.py times them (median of back-to-back calls), Llama-3.1-8B shapes:
  random  each (row, head) keeps each causal block with probability d (cuda_bench.py's mask):
          the CTAs running at one time read K/V from all over their kv head;
  shared  one random pattern per kv head, the same for all its rows and q heads: the tiles of
          all CTAs come from 10% of the kv head's K/V, which L2 holds;
  window  each row keeps its last round(d * (m + 1)) blocks: the CTAs running at one time (rows
          of similar length) read nearly the same blocks.
  band W  (--bands W ...) each row keeps random blocks among its last W, as many as the random
          mask on average: the CTAs running at one time read from about W blocks of K/V
          (W x 64 KB at D = 128), so the time against W shows how much of L2 the walks can use.
Each keeps the diagonal and block 0, as the estimator does.

  PROXYATTN_LIB=.device/libproxyattn_c.so python3 bench/experiments/mask_locality.py --n 131072 --density 0.1
"""
import argparse
import pathlib
import sys

import torch

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import cuda_bench as cb  # noqa: E402

pa = cb.pa


def masks(nb, hq, hkv, density, gen, bands=()):
    idx = torch.arange(nb, device="cuda")
    below = idx[None, :] < idx[:, None]  # [query block, key block], strictly causal
    forced = (idx[None, :] == idx[:, None]) | (idx[None, :] == 0)
    out = {"random": cb.random_keep(nb, hq, density, gen)}
    pattern = torch.rand(hkv, nb, device="cuda", generator=gen) < density  # [kv head, key block]
    shared = pattern.repeat_interleave(hq // hkv, 0)[None, :, :] & below[:, None, :]
    out["shared"] = shared | forced[:, None, :]
    keep_count = torch.round(density * (idx + 1).float()).long()  # per query block
    window = (idx[None, :] >= idx[:, None] - keep_count[:, None] + 1) & below
    out["window"] = (window | forced)[:, None, :].expand(nb, hq, nb).contiguous()
    for w in bands:
        lo = (idx - w + 1).clamp(min=0)
        in_band = (idx[None, :] >= lo[:, None]) & below  # [query block, key block]
        width = in_band.sum(1).clamp(min=1).float()
        prob = (density * (idx + 1).float() / width).clamp(max=1.0)  # same count as random on average
        keep = torch.rand(nb, hq, nb, device="cuda", generator=gen) < prob[:, None, None]
        out[f"band{w}"] = (keep & in_band[:, None, :]) | forced[:, None, :]
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=131072)
    p.add_argument("--density", type=float, nargs="+", default=[0.1])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--bands", type=int, nargs="*", default=[], help="band masks of these widths (blocks)")
    args = p.parse_args()
    hq, hkv, d = cb.SHAPES["llama3.1-8b"]
    n, nb = args.n, args.n // cb.BLOCK
    gen = torch.Generator(device="cuda").manual_seed(7)
    q = torch.randn(n, hq, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    k = torch.randn(n, hkv, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    v = torch.randn(n, hkv, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    out = torch.empty_like(q)
    plan = pa.Plan(hq, hkv, d, torch.bfloat16, "cuda", [0, n])
    cases = []
    for density in args.density:
        for name, keep in masks(nb, hq, hkv, density, gen, args.bands).items():
            ro, ci = cb.to_csr(keep)
            real = ci.numel() / (hq * nb * (nb + 1) // 2)
            cases.append((f"{name} {density}", ro, ci, real, cb.kept_pairs(ro, ci, n, hq)))
    print(f"llama3.1-8b n={n}: mask, density, ms per round, TFLOP/s of the median round", flush=True)
    for label, ro, ci, real, pairs in cases:
        times = []
        for _ in range(args.rounds):
            times.append(cb.time_ms(lambda i: plan.sparse_attention(q, k, v, ro, ci, out), 1, args.warmup,
                                    args.reps))
        ms = sorted(times)[len(times) // 2]
        print(f"{label:14s} {real:.3f}  " + " ".join(f"{t:8.3f}" for t in times) +
              f"  {4 * d * pairs / ms / 1e9:6.0f}", flush=True)
    plan.close()


if __name__ == "__main__":
    main()
