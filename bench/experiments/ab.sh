#!/usr/bin/env bash
# On the GPU machine: the variants of .device_var/variants.tar.xz (build_variants.sh) timed
# against each other with cuda_bench.py, alternated ROUNDS times so that clock drift falls on all;
# optionally their CUDA tests (TESTS="hopper hopper:3 ...", each under TEST_TIMEOUT seconds, 300
# by default) and ncu of some (NCU="a b": time, L2 hit rate, DRAM bytes, stalls at 128K, 10%).
# POWER=1 samples nvidia-smi every 100 ms during each
# timing run and prints the median SM clock and board power of the busy samples (over 300 W):
# whether a variant is limited by the power cap shows there. One summary.txt and one
# logs.tar.xz go to $OUT.
# A name may carry environment for its timing runs after @ signs: "base@PROXYATTN_L2_HINTS=0"
# times variant base with that variable set.
#   NAMES="base no_softmax" SHAPES=llama3.1-8b LENGTHS="32768 131072" DENS="1.0 0.1" bash bench/experiments/ab.sh
set -u
OUT=${OUT:-/tmp/out}; L=/tmp/variant_logs; V=.device_var
mkdir -p "$OUT" "$L"
tar xJf $V/variants.tar.xz -C $V
med() { sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}'; }  # median of a column
{
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for n in ${TEST_NAMES:-}; do
  for kc in ${TESTS:-hopper}; do
    k=${kc%%:*}; ctas=${kc#*:}; [ "$ctas" = "$kc" ] && ctas=
    PROXYATTN_KERNEL=$k PROXYATTN_PERSISTENT_CTAS=$ctas PROXYATTN_STAGE1=hopper LD_LIBRARY_PATH=$PWD/$V/$n \
      timeout ${TEST_TIMEOUT:-300} $V/$n/proxyattn_cuda_tests > $L/tests_${n}_$k$ctas.log 2>&1
    echo "tests $n $kc: exit $?"; grep -E "^\[  (FAILED|PASSED)|Failure" $L/tests_${n}_$k$ctas.log | head -6
  done
done
for round in $(seq ${ROUNDS:-2}); do
  for spec in ${NAMES:-base}; do
    n=${spec%%@*}; envs=(); [ "$spec" != "$n" ] && IFS=@ read -r -a envs <<< "${spec#*@}"
    for shape in ${SHAPES:-llama3.1-8b}; do
      tag=${spec//[@=]/_}_${shape}_$round
      if [ -n "${POWER:-}" ]; then
        nvidia-smi --query-gpu=clocks.sm,power.draw,enforced.power.limit --format=csv,noheader,nounits -lms 100 \
          > $L/power_$tag.csv & smi=$!
      fi
      env "${envs[@]}" LD_LIBRARY_PATH=$PWD/$V/$n PROXYATTN_LIB=$PWD/$V/$n/libproxyattn_c.so timeout 300 python3 bench/cuda_bench.py \
        --lengths ${LENGTHS:-32768 131072} --densities ${DENS:-1.0 0.1} --shapes $shape --reps 5 --warmup 2 \
        --skip cudnn flash flex estimate --out $L/ab_$tag.json > $L/ab_$tag.log 2>&1
      echo "== $spec $shape round $round: exit $?"; grep -E "^(llama|gemma|qwen)\S*\s+[0-9]+ ours_" $L/ab_$tag.log
      if [ -n "${POWER:-}" ]; then
        kill $smi; wait $smi 2>/dev/null
        busy=$(awk -F', *' '$2 > 300' $L/power_$tag.csv)
        echo "busy samples $(echo "$busy" | grep -c .), median SM clock $(echo "$busy" | cut -d, -f1 | med) MHz," \
          "median power $(echo "$busy" | cut -d, -f2 | med) W of $(echo "$busy" | head -1 | cut -d, -f3) W"
      fi
    done
  done
done
if [ -n "${NCU:-}" ]; then
  builds=""; for n in $NCU; do builds="$builds $V/$n"; done
  AB_BUILDS="$builds" bash bench/ncu_ab.sh llama3.1-8b 131072 0.1 --skip cudnn flash flex estimate dense
fi
} 2>&1 | tee "$OUT/summary.txt"
tar cJf "$OUT/logs.tar.xz" -C /tmp variant_logs
