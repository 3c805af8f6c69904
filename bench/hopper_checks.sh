#!/usr/bin/env bash
# The Hopper attention kernel on the GPU machine, in one call: a 60-second smoke test first (a
# hang stops the run there instead of eating the session), then the CUDA tests with each kernel,
# compute-sanitizer on small cases, and an A/B timing of both kernels against cuDNN.
# Binaries come prebuilt in .device/ (scripts/build_device.sh); logs and JSON go to $OUT.
#   STEPS="smoke tests sanitize bench profile" (default: all but profile), BENCH_LENGTHS="8192 32768 131072"
# Under the 10-minute limit of one device call: STEPS="smoke tests sanitize", then STEPS=bench.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/.device:${LD_LIBRARY_PATH:-}
export PROXYATTN_LIB=$PWD/.device/libproxyattn_c.so
B=.device
STEPS=${STEPS:-smoke tests sanitize bench}
has() { [[ " $STEPS " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"

if has smoke; then
  echo "== smoke: dense attention, each kernel, 60 s each"
  for k in hopper hopper-grid portable; do
    PROXYATTN_KERNEL=$k timeout 60 $B/proxyattn_cuda_tests --gtest_filter='Cuda.DenseMatchesReference' \
      > "$OUT/smoke_$k.log" 2>&1
    rc=$?
    echo "$k: exit $rc"; grep -E "kernel|Failure|FAILED|Expected|Which is" "$OUT/smoke_$k.log" | head -12
    if [ "$k" = hopper ] && [ $rc = 124 ]; then echo "hopper timed out (hang?): see hopper-grid below"; fi
  done
fi

if has tests; then
  for k in hopper hopper-grid portable; do
    echo "== CUDA tests, PROXYATTN_KERNEL=$k"
    PROXYATTN_KERNEL=$k timeout 300 $B/proxyattn_cuda_tests > "$OUT/cuda_tests_$k.log" 2>&1
    echo "exit $?"
    grep -E "^\[  (FAILED|PASSED)|Failure|kernel " "$OUT/cuda_tests_$k.log" | head -40
  done
fi

if has sanitize; then
  f='Cuda.DenseMatches*:Cuda.SparseMatches*:Cuda.StridedViews*:Cuda.NanInKeys*'
  for tool in memcheck racecheck synccheck; do
    echo "== compute-sanitizer $tool, PROXYATTN_KERNEL=hopper"
    PROXYATTN_KERNEL=hopper timeout 400 compute-sanitizer --tool $tool --error-exitcode 9 $B/proxyattn_cuda_tests \
      --gtest_filter="$f" > "$OUT/${tool}_hopper.log" 2>&1
    echo "$tool exit $?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|Invalid|Barrier" "$OUT/${tool}_hopper.log" | head -8
  done
fi

if has bench; then
  for k in portable hopper; do
    echo "== cuda_bench.py, PROXYATTN_KERNEL=$k"
    PROXYATTN_KERNEL=$k timeout 400 python3 bench/cuda_bench.py --lengths ${BENCH_LENGTHS:-8192 32768 131072} \
      --densities 1.0 0.1 --shapes llama3.1-8b --skip flash flex estimate --out "$OUT/bench_$k.json" \
      > "$OUT/bench_$k.log" 2>&1
    echo "exit $?"; grep -E "ours_|cudnn" "$OUT/bench_$k.log" | grep -v "^shape" | head -20
  done
fi

if has profile; then
  # One launch of the Hopper kernel at 32K, dense and at 10% density, with every counter section:
  # where the sparse case loses against dense (issue rate, stalls, L2 hit rate of the K/V loads).
  for d in 1.0 0.1; do
    echo "== ncu, Hopper kernel, 32K, density $d"
    PROXYATTN_KERNEL=hopper timeout 300 ncu --clock-control none --set full -k regex:sm90 \
      --launch-skip 3 --launch-count 1 -o "$OUT/ncu_sparse_$d" -f \
      python3 bench/cuda_bench.py --lengths 32768 --densities $d --shapes llama3.1-8b --skip flash flex estimate \
      > "$OUT/ncu_sparse_$d.log" 2>&1
    echo "exit $?"; tail -3 "$OUT/ncu_sparse_$d.log"
  done
fi
