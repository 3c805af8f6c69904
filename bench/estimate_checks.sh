#!/usr/bin/env bash
# The GPU estimator on the H200 in one call: the CUDA tests (all; the estimator's also with the
# portable stage 1 and the portable stage 2), compute-sanitizer on the estimator tests, the
# estimate's time with the Hopper and the portable stage 1 + 3 (PROXYATTN_STAGE1=auto|hopper|
# portable) and stage 2 (PROXYATTN_STAGE2=hopper|portable) in each build of AB_BUILDS (folders
# like .device), and ncu on the stage-1 and stage-2 launches of each at 128K.
#   AB_BUILDS=".device" EST_LENGTHS="32768 131072" STEPS="tests sanitize bench ncu" bash bench/estimate_checks.sh
# EST_MODES entries are stage1:stage2[:split] as TEST_MODES below.
set -u
B=.device
export LD_LIBRARY_PATH=$PWD/$B:${LD_LIBRARY_PATH:-}
builds=${AB_BUILDS:-.device}
STEPS=${STEPS:-tests sanitize bench ncu}
has() { [[ " $STEPS " == *" $1 "* ]]; }
if has tests; then
echo "== CUDA tests"
timeout 200 $B/proxyattn_cuda_tests 2>&1 | grep -E "^\[  (FAILED|PASSED)|Failure|budgets equal" | head -12
# stage1:stage2[:split]: the split (PROXYATTN_STAGE1_SPLIT) of the Hopper stage 1's clusters,
# default the launcher's choice (8 CTAs on the tests' small inputs); 1 is no cluster, 3 leaves
# some CTAs of short rows without a key tile.
for k in ${TEST_MODES:-hopper:hopper portable:hopper hopper:portable hopper:hopper:1 hopper:hopper:3}; do
  IFS=: read -r s1 s2 split <<< "$k"
  echo "== estimator tests, PROXYATTN_STAGE1=$s1 PROXYATTN_STAGE2=$s2${split:+ PROXYATTN_STAGE1_SPLIT=$split}"
  PROXYATTN_STAGE1=$s1 PROXYATTN_STAGE2=$s2 PROXYATTN_STAGE1_SPLIT=${split:-0} timeout 200 $B/proxyattn_cuda_tests \
    --gtest_filter='Cuda.Estimate*:Cuda.Ties*:Cuda.GammaOne*:Cuda.NanStays*:Cuda.Graph*' 2>&1 | grep -E "^\[  (FAILED|PASSED)|Failure|stage 1" | head -12
done
fi
if has sanitize; then
for tool in memcheck racecheck; do
  echo "== compute-sanitizer $tool, estimator tests"
  PROXYATTN_STAGE1=hopper timeout 200 compute-sanitizer --tool $tool --error-exitcode 9 $B/proxyattn_cuda_tests \
    --gtest_filter='Cuda.Estimate*:Cuda.Ties*' 2>&1 |
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" | head -4
done
fi
if has bench; then
for b in $builds; do
  for k in ${EST_MODES:-auto:hopper auto:portable hopper:hopper portable:hopper}; do
    IFS=: read -r s1 s2 split <<< "$k"
    echo "== estimate, build $b, PROXYATTN_STAGE1=$s1 PROXYATTN_STAGE2=$s2${split:+ PROXYATTN_STAGE1_SPLIT=$split}"
    LD_LIBRARY_PATH=$PWD/$b PROXYATTN_LIB=$PWD/$b/libproxyattn_c.so PROXYATTN_STAGE1=$s1 PROXYATTN_STAGE2=$s2 \
      PROXYATTN_STAGE1_SPLIT=${split:-0} timeout 120 \
      python3 bench/cuda_bench.py --lengths ${EST_LENGTHS:-32768 131072} --densities 0.1 --shapes llama3.1-8b \
      --skip cudnn flash flex dense --out /tmp/estimate_ab.json 2>&1 | grep -E "^llama.*ours_(estimate|attention)" | tail -4
  done
done
fi
if has ncu; then
for b in $builds; do for k in hopper portable; do
  echo "== ncu, the stage-1 and stage-2 launches of one estimate at 128K, build $b, PROXYATTN_STAGE1=$k PROXYATTN_STAGE2=$k"
  LD_LIBRARY_PATH=$PWD/$b PROXYATTN_LIB=$PWD/$b/libproxyattn_c.so PROXYATTN_STAGE1=$k PROXYATTN_STAGE2=$k timeout 120 ncu -k regex:stage \
    --launch-skip 3 --launch-count 3 --metrics gpu__time_duration.sum,lts__t_bytes.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active \
    python3 bench/cuda_bench.py --lengths 131072 --densities 0.1 --shapes llama3.1-8b --reps 1 --warmup 1 \
    --skip cudnn flash flex dense --out /tmp/estimate_ncu.json 2>&1 | grep -E "^\s+(gpu__|lts__|sm__)|stage[12]"
done; done
fi
