#!/usr/bin/env python3
"""How evenly the persistent Hopper kernel's deal spreads the work, by the schedule's order.

A model, no GPU: each (query block, head) row is one item whose work is its tile count (m + 1
for the dense causal mask); the schedule sorts the items (backend.cu, schedule_keys_kernel) and
round r gives CTA c item r * grid + c, or grid - 1 - c in odd rounds (items_sm90.cuh, ItemOrder).
Printed: the busiest CTA's work over the mean, for
  kv      every kv head longest row first (before a88a78b),
  zigzag  every other kv head shortest first, the last one longest first (a88a78b),
  length  longest first over all heads,
  chosen  what backend.cu picks: zigzag where each kv head's rows fill a round, else length.
  python3 bench/schedule_balance.py --lengths 4096 8192 16384 --heads 32 8
"""
import argparse


def rows(lengths, hq, hkv, order):
    g = hq // hkv
    blocks = [(n + 127) // 128 for n in lengths]
    if order == "length":
        return sorted((m + 1 for nb in blocks for m in range(nb) for _ in range(hq)), reverse=True)
    out = []
    for kvh in range(hkv):
        seg = sorted((m + 1 for nb in blocks for m in range(nb) for _ in range(g)), reverse=True)
        if order == "zigzag" and (hkv - 1 - kvh) % 2 == 1:
            seg.reverse()
        out += seg
    return out


def busiest_over_mean(work, grid):
    total = [0] * grid
    for k, w in enumerate(work):
        r, c = divmod(k, grid)
        total[grid - 1 - c if r & 1 else c] += w
    return max(total) / (sum(work) / grid)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 131072],
                    help="one sequence of each length, or --batch: one batch of all of them")
    ap.add_argument("--batch", action="store_true")
    ap.add_argument("--heads", type=int, nargs=2, default=[32, 8], metavar=("HQ", "HKV"))
    ap.add_argument("--grid", type=int, default=132, help="persistent CTAs (the H200's SMs)")
    args = ap.parse_args()
    hq, hkv = args.heads
    cases = [args.lengths] if args.batch else [[n] for n in args.lengths]
    print(f"heads {hq}/{hkv}, grid {args.grid}: busiest CTA's work / mean")
    print(f"{'lengths':24s} {'kv':>7s} {'zigzag':>7s} {'length':>7s} {'chosen':>7s}")
    for lengths in cases:
        res = {o: busiest_over_mean(rows(lengths, hq, hkv, o), args.grid) for o in ("kv", "zigzag", "length")}
        per_kv = sum((n + 127) // 128 for n in lengths) * hq // hkv
        chosen = res["zigzag"] if per_kv >= args.grid else res["length"]
        name = " ".join(str(n) for n in lengths)
        print(f"{name[:24]:24s} {res['kv']:7.3f} {res['zigzag']:7.3f} {res['length']:7.3f} {chosen:7.3f}")


if __name__ == "__main__":
    main()
