#!/usr/bin/env bash
# Two or more builds of the proxyattn tool timed against each other on the GPU machine, in rounds
# whose order alternates (ABBA: the first round in the order given, the next reversed, ...), so
# that no build always runs first on a cooler board. Each build is a folder with its `proxyattn`
# (scripts/build_device.sh copies one to .device/), carried to the machine; the other arguments
# go to `proxyattn bench --device cuda --json`. A quick A/B of kernel variants: no Python package
# to build, but no cuDNN either (bench/cuda_bench.py's ratios are what a kernel claim needs).
#
#   ROUNDS=2 bash bench/ab_cli.sh base=/tmp/ab/base fma1=/tmp/ab/fma1 -- --lengths 32768 131072 \
#     --densities 1 0.2 --q-heads 14 --kv-heads 2 --head-dim 64 --repeat 9
#
# Prints one line per (round, build): tokens:density, dense and sparse milliseconds; the JSONs go
# to $OUT (default /tmp/out) as bench_<build>_<round>.json.
set -euo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
builds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do builds+=("$1"); shift; done
[ $# -gt 0 ] && shift
[ ${#builds[@]} -ge 2 ] || { echo "usage: $0 NAME=DIR NAME=DIR ... -- BENCH_ARGS" >&2; exit 2; }
for round in $(seq "${ROUNDS:-2}"); do
  order=("${builds[@]}")
  if [ $((round % 2)) = 0 ]; then  # reversed
    order=()
    for ((i = ${#builds[@]} - 1; i >= 0; i--)); do order+=("${builds[$i]}"); done
  fi
  for b in "${order[@]}"; do
    name=${b%%=*} dir=${b#*=}
    LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" timeout 300 "$dir/proxyattn" bench --device cuda --json "$@" \
      > "$OUT/bench_${name}_$round.json"
    python3 - "$OUT/bench_${name}_$round.json" "$name" "$round" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]} round {sys.argv[3]}: " + "  ".join(
    f"{r['tokens']}:{r['density']:.2f} dense {r['dense_ms']:.2f} sparse {r['sparse_ms']:.2f}" for r in rows))
PY
  done
done
