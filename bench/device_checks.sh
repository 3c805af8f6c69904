#!/usr/bin/env bash
# One device session: correctness (CUDA tests, compute-sanitizer) and a first timing table.
# Expects prebuilt binaries in .device/ (scripts/build_device.sh: built here with nvcc for sm_90a) and
# writes logs under $OUT (default /tmp/out).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/.device:${LD_LIBRARY_PATH:-}
B=.device
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
echo "== CUDA tests"
$B/proxyattn_cuda_tests 2>&1 | tee "$OUT/cuda_tests.log" | grep -E "^\[  (FAILED|PASSED|  OK|SKIPPED)|Failure|error|rows equal|budgets" | head -60
if [ "${SANITIZE:-1}" = 1 ]; then
  echo "== compute-sanitizer memcheck"
  timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 $B/proxyattn_cuda_tests \
    --gtest_filter='Cuda.SparseMatches*:Cuda.GammaOne*:Cuda.Estimate*' > "$OUT/memcheck.log" 2>&1
  echo "memcheck exit $?"; tail -4 "$OUT/memcheck.log"
  echo "== compute-sanitizer racecheck"
  timeout 240 compute-sanitizer --tool racecheck --error-exitcode 9 $B/proxyattn_cuda_tests \
    --gtest_filter='Cuda.DenseMatches*:Cuda.GammaOne*' > "$OUT/racecheck.log" 2>&1
  echo "racecheck exit $?"; tail -4 "$OUT/racecheck.log"
fi
if [ -n "${BENCH_LENGTHS:-}" ]; then
  echo "== proxyattn bench"
  $B/proxyattn bench --device cuda --lengths $BENCH_LENGTHS --densities 1 0.5 0.2 0.1 0.05 --estimated 2>&1 | tee "$OUT/bench.txt"
fi
