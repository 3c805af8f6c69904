#!/usr/bin/env bash
# The GPU estimator on the H200 in one call: the CUDA tests (all, then the estimator's with each
# stage-1 grouping), compute-sanitizer on the estimator tests, the estimate's time in two builds
# (AB_BUILDS, folders like .device), and ncu on one stage-1 launch of each at 128K.
#   AB_BUILDS=".device_old .device" STAGE1_BLOCKS="1 2 4" bash bench/estimate_checks.sh
set -u
B=.device
export LD_LIBRARY_PATH=$PWD/$B:${LD_LIBRARY_PATH:-}
builds=${AB_BUILDS:-.device_old .device}
echo "== CUDA tests"
timeout 200 $B/proxyattn_cuda_tests 2>&1 | grep -E "^\[  (FAILED|PASSED)|Failure|budgets equal" | head -12
for sb in ${STAGE1_BLOCKS:-1 2 4 8}; do
  echo "== estimator tests, PROXYATTN_STAGE1_BLOCKS=$sb"
  PROXYATTN_STAGE1_BLOCKS=$sb timeout 200 $B/proxyattn_cuda_tests \
    --gtest_filter='Cuda.Estimate*:Cuda.Ties*:Cuda.GammaOne*:Cuda.NanStays*:Cuda.Graph*' 2>&1 | grep -E "^\[  (FAILED|PASSED)|Failure" | head -6
done
for tool in memcheck racecheck; do
  echo "== compute-sanitizer $tool, estimator tests"
  timeout 200 compute-sanitizer --tool $tool --error-exitcode 9 $B/proxyattn_cuda_tests --gtest_filter='Cuda.Estimate*:Cuda.Ties*' 2>&1 |
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" | head -4
done
for b in $builds; do
  for sb in "" ${STAGE1_BLOCKS:-}; do
    echo "== estimate, build $b, PROXYATTN_STAGE1_BLOCKS=$sb"
    LD_LIBRARY_PATH=$PWD/$b PROXYATTN_LIB=$PWD/$b/libproxyattn_c.so PROXYATTN_STAGE1_BLOCKS=$sb timeout 120 \
      python3 bench/cuda_bench.py --lengths 32768 131072 --densities 0.1 --shapes llama3.1-8b \
      --skip cudnn flash flex dense --out /tmp/estimate_ab.json 2>&1 | grep -E "^llama.*ours_(estimate|attention)" | tail -4
  done
done
for b in $builds; do
  echo "== ncu, one stage-1 launch at 128K, build $b"
  LD_LIBRARY_PATH=$PWD/$b PROXYATTN_LIB=$PWD/$b/libproxyattn_c.so timeout 120 ncu -k regex:stage1 --launch-skip 1 \
    --launch-count 1 --metrics gpu__time_duration.sum,lts__t_bytes.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active \
    python3 bench/cuda_bench.py --lengths 131072 --densities 0.1 --shapes llama3.1-8b --reps 1 --warmup 1 \
    --skip cudnn flash flex dense --out /tmp/estimate_ncu.json 2>&1 | grep -E "^\s+(gpu__|lts__|sm__)"
done
