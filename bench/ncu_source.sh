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
python3 bench/ncu_source_top.py /tmp/ncu_source.csv 45
