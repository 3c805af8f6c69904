#!/bin/bash
# ncu of one launch of the Hopper kernel in each build folder of AB_BUILDS (default .device_old
# .device): time, cycles, instructions, SM throughput (the tensor pipe, the busiest in these
# kernels), L2 hit rate, DRAM bytes, stall reasons.
#   bench/ncu_ab.sh SHAPE N DENSITY [more cuda_bench.py arguments]
shape=$1 n=$2 d=$3; shift 3
for b in ${AB_BUILDS:-.device_old .device}; do
  echo "=== $b $shape $n $d"
  LD_LIBRARY_PATH=$PWD/$b PROXYATTN_LIB=$PWD/$b/libproxyattn_c.so timeout 200 ncu --clock-control none -k regex:sm90 --launch-skip 2 --launch-count 1 \
    --metrics gpu__time_duration.sum,sm__cycles_elapsed.avg,smsp__inst_executed.sum,lts__t_sector_hit_rate.pct,dram__bytes_read.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_no_instruction_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_membar_per_issue_active.ratio,smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_dispatch_stall_per_issue_active.ratio,smsp__average_warps_issue_stalled_sleeping_per_issue_active.ratio \
    python3 bench/cuda_bench.py --lengths $n --densities $d --shapes $shape --reps 3 --warmup 1 --skip cudnn flash flex estimate "$@" --out /tmp/x.json > /tmp/ncu.log 2>&1
  grep -E "^\s+(gpu__|sm__|smsp__|lts__|dram__)" /tmp/ncu.log | awk '{printf "%-90s %s %s\n", $1, $2, $3}' | sed 's/smsp__average_warps_issue_stalled_//'
done
