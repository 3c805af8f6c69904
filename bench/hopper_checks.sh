#!/usr/bin/env bash
# The Hopper attention kernel on the GPU machine, in one call: a 60-second smoke test first (a
# hang stops the run there instead of eating the session), then the CUDA tests with each kernel,
# compute-sanitizer on small cases, and an A/B timing of both kernels against cuDNN.
# Binaries come prebuilt in .device/ (scripts/build_device.sh); logs and JSON go to $OUT.
#   STEPS="smoke tests sanitize bench ab profile builds" (default: smoke tests sanitize bench),
#   BENCH_LENGTHS="8192 32768 131072", BENCH_ARGS="--densities 1.0 0.1 --skip flash flex estimate",
#   KERNELS="portable hopper" (bench), TESTS_KERNELS="hopper hopper:3 hopper-grid portable"
#   (hopper:3: the persistent kernel capped at 3 CTAs, PROXYATTN_PERSISTENT_CTAS=3)
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
  # hopper:3 is the persistent kernel on 3 CTAs: every CTA walks many work items.
  for kc in ${TESTS_KERNELS:-hopper hopper:3 hopper-grid portable}; do
    k=${kc%%:*}; ctas=${kc#*:}; [ "$ctas" = "$kc" ] && ctas=
    echo "== CUDA tests, PROXYATTN_KERNEL=$k${ctas:+ PROXYATTN_PERSISTENT_CTAS=$ctas}"
    # The Hopper runs also take the estimator's Hopper stage 1 on the tests' small inputs.
    s1=portable; [ "$k" = portable ] || s1=hopper
    PROXYATTN_KERNEL=$k PROXYATTN_PERSISTENT_CTAS=$ctas PROXYATTN_STAGE1=$s1 timeout 300 $B/proxyattn_cuda_tests > "$OUT/cuda_tests_${k}${ctas}.log" 2>&1
    echo "exit $?"
    grep -E "^\[  (FAILED|PASSED)|Failure|kernel " "$OUT/cuda_tests_${k}${ctas}.log" | head -40
  done
fi

if has sanitize; then
  f='Cuda.DenseMatches*:Cuda.SparseMatches*:Cuda.StridedViews*:Cuda.NanInKeys*:Cuda.GrowingScores*'
  for tool in memcheck racecheck synccheck; do
    echo "== compute-sanitizer $tool, PROXYATTN_KERNEL=hopper"
    PROXYATTN_KERNEL=hopper timeout 400 compute-sanitizer --tool $tool --error-exitcode 9 $B/proxyattn_cuda_tests \
      --gtest_filter="$f" > "$OUT/${tool}_hopper.log" 2>&1
    echo "$tool exit $?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|Invalid|Barrier" "$OUT/${tool}_hopper.log" | head -8
  done
fi

if has bench; then
  for k in ${KERNELS:-portable hopper}; do
    echo "== cuda_bench.py, PROXYATTN_KERNEL=$k"
    PROXYATTN_KERNEL=$k timeout 400 python3 bench/cuda_bench.py --lengths ${BENCH_LENGTHS:-8192 32768 131072} \
      ${BENCH_ARGS:---densities 1.0 0.1 --skip flash flex estimate} --shapes llama3.1-8b --out "$OUT/bench_$k.json" \
      > "$OUT/bench_$k.log" 2>&1
    echo "exit $?"; sed -n '/^shape/,$p' "$OUT/bench_$k.log"
  done
fi

if has ab; then
  # The schedule order and the L2 hints of the Hopper kernel, on the random 10% mask at 128K.
  for sched in length kv; do
    for hints in 0 1; do
      echo "== A/B: PROXYATTN_SCHEDULE=$sched PROXYATTN_L2_HINTS=$hints"
      PROXYATTN_SCHEDULE=$sched PROXYATTN_L2_HINTS=$hints timeout 120 python3 bench/cuda_bench.py \
        --lengths ${AB_LENGTHS:-131072} --densities ${AB_DENSITIES:-0.1} --shapes llama3.1-8b \
        --skip cudnn flash flex dense estimate --out "$OUT/ab_${sched}_$hints.json" > "$OUT/ab_${sched}_$hints.log" 2>&1
      echo "exit $?"; grep -E "^llama.*ours_" "$OUT/ab_${sched}_$hints.log" | tail -4
    done
  done
fi

if has profile; then
  # One launch of the Hopper kernel on the random 10% mask at 128K, per schedule order: DRAM and
  # L2 traffic, hit rate, tensor-pipe use (why the sparse rate is below the dense one).
  for sched in length kv; do
    echo "== ncu, Hopper kernel, 128K, density 0.1, PROXYATTN_SCHEDULE=$sched"
    PROXYATTN_SCHEDULE=$sched timeout 300 ncu --clock-control none -k regex:sm90 --launch-skip 2 --launch-count 1 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
      --metrics lts__t_sector_hit_rate.pct,dram__bytes_read.sum,lts__t_bytes.sum,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active \
      python3 bench/cuda_bench.py --lengths 131072 --densities 0.1 --shapes llama3.1-8b --reps 5 --warmup 1 \
      --skip cudnn flash flex dense estimate --out "$OUT/ncu_$sched.json" > "$OUT/ncu_$sched.log" 2>&1
    echo "exit $?"
    grep -E "Duration|DRAM Throughput|Memory Throughput|L2 Hit Rate|L1/TEX Hit|Compute \(SM\)|lts__t_sector_hit_rate|dram__bytes_read|lts__t_bytes|gmma|Issue Slots Busy" "$OUT/ncu_$sched.log" | head -20
  done
fi

if has builds; then
  # Two builds of the library (AB_BUILDS, each a folder like .device), alternated twice so that
  # clock drift falls on both: Llama shapes at 32K and 128K, Gemma-2-9B (D 256) at 32K and 128K.
  for round in 1 2; do
    for b in ${AB_BUILDS:-.device_old .device}; do
      tag=$(basename "$b")_$round
      echo "== build $b, round $round"
      for shape in llama3.1-8b gemma2-9b; do
        LD_LIBRARY_PATH=$PWD/$b PROXYATTN_LIB=$PWD/$b/libproxyattn_c.so timeout 200 python3 bench/cuda_bench.py \
          --lengths ${AB_LENGTHS:-32768 131072} --densities ${AB_DENSITIES:-1.0 0.1 0.05} --shapes $shape \
          --skip cudnn flash flex estimate --out "$OUT/builds_${tag}_$shape.json" > "$OUT/builds_${tag}_$shape.log" 2>&1
        echo "$shape exit $?"; grep -E "ours_" "$OUT/builds_${tag}_$shape.log" | tail -8
      done
    done
  done
fi
