#!/bin/bash
# Where the Hopper kernel's warps wait, per SASS instruction: ncu's warp-state sampling of one
# launch (Llama shapes, N, DENSITY), the instructions with the most samples and their top stall
# reasons. The full per-instruction CSV (xz) goes to $OUT.
#   OUT=/tmp/o bash bench/ncu_source.sh 131072 0.1
n=${1:-131072} d=${2:-0.1}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LD_LIBRARY_PATH=$PWD/.device PROXYATTN_LIB=$PWD/.device/libproxyattn_c.so timeout 400 ncu --clock-control none \
  -k regex:sm90 --launch-skip 2 --launch-count 1 --section SourceCounters --section WarpStateStats -f -o /tmp/ncu_source \
  python3 bench/cuda_bench.py --lengths $n --densities $d --shapes llama3.1-8b --reps 3 --warmup 1 \
  --skip cudnn flash flex estimate dense --out /tmp/ncu_source.json > /tmp/ncu_source.log 2>&1
echo "ncu exit $?"; tail -3 /tmp/ncu_source.log
ncu -i /tmp/ncu_source.ncu-rep --page source --csv --print-source sass > /tmp/ncu_source.csv 2>/tmp/ncu_source.err
echo "export exit $? ($(wc -l < /tmp/ncu_source.csv) lines)"; head -3 /tmp/ncu_source.err
xz -c /tmp/ncu_source.csv > "$OUT/ncu_source.csv.xz"; xz -c /tmp/ncu_source.ncu-rep > "$OUT/ncu_source.ncu-rep.xz"
python3 - <<'PY'
import csv
rows = list(csv.reader(open("/tmp/ncu_source.csv")))
hdr_i = next(i for i, r in enumerate(rows) if any("Source" == c or "Address" in c for c in r))
hdr, body = rows[hdr_i], rows[hdr_i + 1:]
print("columns:", " | ".join(hdr)[:1500])
def col(name):
    return next((i for i, c in enumerate(hdr) if c.startswith(name)), None)
src, smp = col("Source"), col("Warp Stall Sampling (All")
def num(x):
    try: return float(x.replace(",", ""))
    except ValueError: return 0.0
if smp is None:
    raise SystemExit("no sampling column")
total = sum(num(r[smp]) for r in body if len(r) > smp)
stall_cols = [i for i, c in enumerate(hdr) if c.startswith("stall_") or "Stall" in c and i != smp]
print(f"total samples {total:.0f}")
for r in sorted(body, key=lambda r: -num(r[smp]) if len(r) > smp else 0)[:45]:
    share = 100 * num(r[smp]) / max(total, 1)
    reasons = sorted(((num(r[i]), hdr[i]) for i in stall_cols if i < len(r)), reverse=True)[:3]
    print(f"{share:5.1f}%  {r[src][:70]:70s}  " + ", ".join(f"{h.split('(')[0].strip()}={v:.0f}" for v, h in reasons if v))
PY
