"""Per-activity share of ncu's warp-state samples for the Hopper kernel's SASS (ncu_source.csv of
bench/ncu_source.sh). The index ranges are the main loop of the bf16 D = 128 build of 2cb1ba0."""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ncu_source_top import load, num  # noqa: E402

_, body, _, S, src, tot = load(sys.argv[1])
cat = {}
def add(k, v): cat[k] = cat.get(k, 0) + v
for k, r in enumerate(body):
    v, t = num(r[S]), r[src]
    op = re.sub(r'^@!?U?P\w+\s+', '', t.strip()).split(' ')[0].split('.')[0]
    if k >= 2800: add('producer warp (copies; mostly waiting for free stages)', v)
    elif k < 1194 or k > 2180: add('consumer: item start, first tile, epilogue', v)
    elif 'DEPBAR.LE gsb0, 0x1' in t: add('consumer: wait for its scores S (wgmma)', v)
    elif 'DEPBAR' in t: add('consumer: wait for its P V (wgmma)', v)
    elif k in (1241, 1257): add('consumer: wait for the issue turn (named barrier)', v)
    elif 1233 <= k <= 1239: add('consumer: wait for K and V tiles (mbarrier)', v)
    elif k <= 1232: add('consumer: next kept block (mask load, index tests, stage math)', v)
    elif k <= 1313: add('consumer: issuing the 16 wgmma (+ descriptors)', v)
    elif op == 'MUFU': add('consumer: softmax, ex2 (MUFU)', v)
    elif k < 2026: add('consumer: softmax, the rest (max, shuffles, FFMA, sums)', v)
    else: add('consumer: after P V (vote, rescale, pack P)', v)
for k, v in sorted(cat.items(), key=lambda x: -x[1]): print(f"{100 * v / tot:5.1f}%  {k}")
print(f"total samples {tot:.0f} (every warp of the launch: 8 consumer warps and 1 producer warp a CTA)")
