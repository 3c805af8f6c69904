#!/usr/bin/env bash
# One session on the GPU machine: a step per device call, the calls back to back (the machine keeps
# /tmp between calls while it stays warm). Logs and results go to $OUT.
#
#   start PART     keep model part PART (eval/assemble_model.sh; SmolLM2's parts, by their
#                  manifest, go to /tmp/proxyattn_smollm2) and start the session's chain in the
#                  background (the call must carry .gpu from scripts/build_device.sh; with a model,
#                  give it a part small enough to leave room, such as Qwen's last):
#                  build the Python package while the CUDA tests (every kernel choice) and
#                  compute-sanitizer memcheck run (binaries of scripts/build_device.sh, carried as
#                  .gpu/device.tar.xz); then bench/estimate_cost.py alone on the GPU; prefill
#                  against a KV cache (bench/chunked_prefill.py, KV_RUNS); then, once a model is
#                  assembled, the accuracy suite (eval/run_suite.sh, resuming from
#                  .gpu/results/*.jsonl.gz, its steps SUITE_STEPS) and the long prompts
#                  (eval/run_long.sh, resuming from .gpu/long/*.gz, its steps LONG_STEPS); last
#                  the tree against an earlier one (.gpu/before.tar.gz, built from the start on
#                  the CPUs; AB_ROUNDS, AB_LENGTHS, AB_SHAPES, AB_REPS, AB_DENSITIES (empty: no
#                  sparse rows), AB_SKIP (cuda_bench.py --skip); AB_OPTIONS_BEFORE and
#                  AB_OPTIONS_AFTER: plan options of each tree, JSON, where their defaults differ;
#                  AB_ARGS: more cuda_bench.py arguments for both trees, such as "--rest 2")
#   part PART      keep one more model part
#   run            run STEPS in the foreground, on what "start" built (the machine still warm)
#   wait SECONDS   wait for the chain (at most SECONDS), then report and copy the results
# STEPS (default "tests pytest memcheck bench kvcache ab suite long"; also "ncu": the attention
# kernel under Nsight Compute, bench/ncu_attention.py) leaves steps out. Everything
# comes back as logs and results.tgz.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1
W=/tmp/pa_session
mkdir -p $W

report() {  # what the background jobs did; the device tool brings back at most 8 files
  [ -f $W/build.log ] && { echo "-- package build: $(cat $W/build.status 2>/dev/null || echo running)"; tail -2 $W/build.log; }
  [ -f $W/tests.log ] && { echo "-- CUDA tests: $(cat $W/tests.status 2>/dev/null || echo running)"; \
    grep -E "PASSED|FAILED|tests ran" $W/tests.log | tail -4; }
  [ -f $W/pytest.log ] && { echo "-- Python tests: $(cat $W/pytest.status 2>/dev/null || echo running)"; tail -3 $W/pytest.log; }
  [ -f $W/memcheck.log ] && { echo "-- memcheck: $(cat $W/memcheck.status 2>/dev/null || echo running)"; \
    grep -E "ERROR SUMMARY|PASSED|FAILED" $W/memcheck.log | tail -3; }
  [ -f $W/kvcache.log ] && { echo "-- KV cache: $(cat $W/kvcache.status 2>/dev/null || echo running)"; \
    grep -E "^(\||==)" $W/kvcache.log | tail -40; }
  [ -f $W/ncu.status ] && { echo "-- ncu: $(cat $W/ncu.status)"; \
    grep -E "^==|Duration|Compute \(SM\) Throughput|L2 Hit Rate|DRAM Throughput|dram__bytes_read|Executed Ipc Active" $W/ncu.log | head -40; }
  [ -f $W/ab.status ] && { echo "-- A/B:"; \
    for f in $W/ab/bench_before_${AB_ROUNDS:-2}.log $W/ab/bench_after_${AB_ROUNDS:-2}.log; do echo "$f"; grep -E "^(llama|gemma|qwen)" $f | grep -E "ours|cudnn"; done; }
  [ -f $W/suite.log ] && { echo "-- suite: $(cat $W/suite.status 2>/dev/null || echo running)"; tail -3 $W/suite.log; }
  [ -f $W/long.log ] && { echo "-- long prompts: $(cat $W/long.status 2>/dev/null || echo running)"; tail -4 $W/long.log; }
  local f
  for f in build.log tests.log pytest.log memcheck.log kvcache.log ncu.log suite.log long.log; do
    [ -f $W/$f ] && cp $W/$f "$OUT/"
  done
  # every result in one archive: the suite's answers, the long-prompt study, the estimator's cost
  # (not the A/B's earlier tree: its source and package would pass the 16 MiB a returned file may have)
  (cd $W && tar -czf "$OUT/results.tgz" --exclude='*.tmp' --exclude=ab/src --exclude=ab/before \
    $(ls -d results long kvcache ab estimate_cost.* 2>/dev/null)) 2>/dev/null
  return 0
}

keep_part() {
  local part=$1 dest=/tmp/proxyattn_model
  [ -n "$part" ] || return 0  # a session without a model (kernel steps only)
  # SmolLM2's parts go apart from Qwen's: told by the file the part's manifest names, not its path
  python3 -c 'import json, sys; sys.exit(not json.load(open(sys.argv[1]))["file"].startswith("SmolLM2"))' \
    "$part/manifest.json" 2>/dev/null && dest=/tmp/proxyattn_smollm2
  DEST=$dest bash eval/assemble_model.sh "$part" | tail -2
  [ -d .model/eval ] && mkdir -p $W/prompts && cp -r .model/eval/* $W/prompts/  # prompts carried with a part
  return 0
}

wait_before_tree() {  # the A/B's earlier tree, building in the background since the chain began
  [ -f $W/ab/build.pid ] || return 0
  while kill -0 $(cat $W/ab/build.pid) 2>/dev/null; do sleep 5; done
}

chain() {
  local steps=${STEPS:-tests pytest memcheck bench kvcache ab suite long}
  if [[ $steps == *nobuild* ]]; then  # "run": the package and binaries of an earlier call
    cd $W/src
  else
    # Build from a copy: the next call's transfer rewrites the working tree while this runs.
    rm -rf $W/src && mkdir -p $W/src && cp -r $(ls -A | grep -v -E '^(\.model|\.git|build.*)$') $W/src/ && cd $W/src
    mkdir -p $W/hwy && dpkg -x .gpu/libhwy-dev.deb $W/hwy  # Highway's headers (scripts/build_device.sh)
    mkdir -p $W/device && tar -xJf .gpu/device.tar.xz -C $W/device
    # The package builds on the CPUs while the CUDA tests run on the GPU.
    (PROXYATTN_OFFLINE=1 PROXYATTN_CUDA=ON scripts/install_python.sh -Ccmake.define.HWY_INCLUDE_DIR=$W/hwy/usr/include \
      '-Ccmake.define.PROXYATTN_CUDA_GENCODE=-gencode=arch=compute_90a,code=sm_90a' > $W/build.log 2>&1
     echo "exit $?" > $W/build.status) &
    package_pid=$!
  fi
  if [[ $steps == *ab* ]] && [ -f .gpu/before.tar.gz ]; then
    # The tree to compare against (.gpu/before.tar.gz, `git archive` of its commit), built as a
    # second package beside the installed one while the GPU runs the steps before the A/B.
    rm -rf $W/ab && mkdir -p $W/ab/src && tar -xzf .gpu/before.tar.gz -C $W/ab/src
    (cd $W/ab/src && python3 -m pip install -q --disable-pip-version-check --no-build-isolation --no-index --no-deps \
      --target $W/ab/before -Ccmake.define.PROXYATTN_CUDA=ON -Ccmake.define.HWY_INCLUDE_DIR=$W/hwy/usr/include \
      '-Ccmake.define.PROXYATTN_CUDA_GENCODE=-gencode=arch=compute_90a,code=sm_90a' .) > $W/ab/build.log 2>&1 &
    echo $! > $W/ab/build.pid
  fi
  export LD_LIBRARY_PATH=$W/device
  if [[ $steps == *tests* ]]; then  # every test under each kernel choice (tests/cuda_util.hpp)
    timeout 540 $W/device/proxyattn_cuda_tests > $W/tests.log 2>&1; echo "exit $?" > $W/tests.status
  fi
  if [[ $steps == *memcheck* ]]; then
    timeout 400 compute-sanitizer --tool memcheck --error-exitcode 9 $W/device/proxyattn_cuda_tests \
      --gtest_filter='Cuda.EstimateMatchesReferenceUpToNearTies:CudaChunked.LastChunkKeepsTheOneCallMask:CudaPaged.*:Cuda.NanStaysInItsSequenceAndGroup' \
      > $W/memcheck.log 2>&1
    echo "exit $?" > $W/memcheck.status
  fi
  [ -n "${package_pid:-}" ] && wait $package_pid  # the package
  if [[ $steps == *pytest* ]]; then  # the package's tests with CUDA (the CPU ones run in CI)
    timeout 400 python3 -m pytest -q -p no:cacheprovider python/tests/test_package.py python/tests/test_torch_ops.py \
      python/tests/test_chunked.py python/tests/test_transformers.py python/tests/test_e2e_script.py \
      > $W/pytest.log 2>&1; echo "exit $?" > $W/pytest.status
  fi
  if [[ $steps == *bench* ]]; then
    timeout 400 python3 bench/estimate_cost.py --lengths 32768 131072 --json $W/estimate_cost.json \
      > $W/estimate_cost.log 2>&1
  fi
  if [[ $steps == *kvcache* ]]; then  # Llama-3.1-8B's attention shape, one layer
    mkdir -p $W/kvcache
    # KV_RUNS: tokens:budget floor; 12288 keeps about the density the evaluation model keeps at
    # 128K (20%), 2048
    # of 2048 (the default) 3% of this input; KV_ORDERS: the page orders (shuffled, in-order);
    # KV_KERNELS: PROXYATTN_KERNEL values ("default": unset; "sm90,pack=1" packs every page size)
    for kernel in ${KV_KERNELS:-default}; do
      for run in ${KV_RUNS:-131072:12288 131072:2048 32768:2048}; do
        n=${run%:*} floor=${run#*:}
        echo "== kernel $kernel, $n tokens, budget floor $floor"
        ( [ $kernel = default ] || export PROXYATTN_KERNEL=$kernel
          timeout 500 python3 bench/chunked_prefill.py --device cuda --dtype bfloat16 --heads 32 8 --tokens $n \
            --min-budget-tokens $floor --chunks ${KV_CHUNKS:-8192 16384 32768} --page-sizes ${KV_PAGES:-16 128 256} \
            --page-orders ${KV_ORDERS:-shuffled} --repeats ${KV_REPEATS:-5} \
            --json $W/kvcache/chunked_${n}_floor${floor}_${kernel/,/_}.json )
      done
    done > $W/kvcache.log 2>&1
    echo "exit $?" > $W/kvcache.status
  fi
  if [[ $steps == *ncu* ]]; then  # where the attention kernel's time goes (NCU_SHAPES: q heads, kv heads,
    # D; NCU_FLAGS: bench/ncu_attention.py's, such as --full-mask, or --estimate with
    # NCU_KERNEL=stage1_sm90; NCU_SECTIONS: more ncu sections, such as SourceCounters), on the
    # earlier tree too with an ab step
    wait_before_tree
    for tree in after $([ -d $W/ab/before ] && echo before); do
      for shape in ${NCU_SHAPES:-14,2,64 32,8,128}; do
        echo "== $tree tree, shape $shape, ${NCU_TOKENS:-32768} tokens ${NCU_FLAGS:-}"
        # SourceCounters: the report is kept for its per-instruction page (none left from a run before)
        rep=$W/ncu_${tree}_${shape//,/_}
        rm -f $rep.ncu-rep
        PYTHONPATH=$([ $tree = before ] && echo $W/ab/before) timeout 300 ncu --kernel-name regex:${NCU_KERNEL:-sparse_attention} \
          --launch-skip 2 --launch-count 1 --section SpeedOfLight --section ComputeWorkloadAnalysis \
          $(for x in ${NCU_SECTIONS:-}; do echo --section $x; done) \
          --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --metrics \
          sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,lts__t_sector_hit_rate.pct,dram__bytes_read.sum \
          $([[ ${NCU_SECTIONS:-} == *SourceCounters* ]] && echo "--clock-control none -f -o $rep") \
          python3 bench/ncu_attention.py --shape ${shape//,/ } --tokens ${NCU_TOKENS:-32768} ${NCU_FLAGS:-}
        if [ -f $rep.ncu-rep ]; then  # the stalls per SASS instruction
          ncu -i $rep.ncu-rep --page source --csv --print-source sass > $rep.csv
          python3 bench/ncu_source_top.py $rep.csv 40
          xz -c $rep.csv > "$OUT/ncu_source_${tree}_${shape//,/_}.csv.xz"
          ncu -i $rep.ncu-rep --print-summary none | grep -E "Duration|Issued Warp|Stall|Eligible|Active Warps" | head -20
        fi
      done
    done > $W/ncu.log 2>&1
    echo "exit $?" > $W/ncu.status
  fi
  if [[ $steps == *suite* ]]; then
    # A step waits for its model, at most 10 minutes (Qwen's parts arrive last: SmolLM2's steps run
    # meanwhile).
    mkdir -p $W/results  # earlier results, carried compressed
    for f in .gpu/results/*.jsonl.gz; do [ -f "$f" ] && zcat "$f" > $W/results/$(basename "$f" .gz); done
    PROMPTS=$W/prompts SUITE_WAIT_S=600 bash eval/run_suite.sh $W/results > $W/suite.log 2>&1
    echo "exit $?" > $W/suite.status
  fi
  if [[ $steps == *long* ]]; then
    for i in $(seq 120); do ls /tmp/proxyattn_model/*.gguf > /dev/null 2>&1 && break; sleep 5; done
    mkdir -p $W/long  # earlier results, carried compressed
    for f in .gpu/long/*.gz; do [ -f "$f" ] && zcat "$f" > $W/long/$(basename "$f" .gz); done
    PROMPTS=$W/prompts bash eval/run_long.sh $W/long > $W/long.log 2>&1
    echo "exit $?" > $W/long.status
  fi
  if [[ $steps == *ab* ]] && [ -f $W/ab/build.pid ]; then
    # The earlier tree (built in the background since the start) against this one: bench/cuda_bench.py
    # --ab runs both as processes that take turns on the GPU, one timed method at a time in ABBA
    # order, the tree that goes first swapped from round to round (ratios to cuDNN in each tree's
    # own runs; the JSONs carry every estimated mask's digest).
    wait_before_tree
    for round in $(seq ${AB_ROUNDS:-2}); do
      PYTHONPATH= timeout 600 python3 bench/cuda_bench.py --ab $W/ab/before \
        --shapes ${AB_SHAPES:-llama3.1-8b gemma2-9b qwen2.5-0.5b} --lengths ${AB_LENGTHS:-32768 131072} --densities ${AB_DENSITIES-1.0 0.1} --skip ${AB_SKIP:-flash flex} ${AB_ARGS:-} \
        --reps ${AB_REPS:-5} --options "${AB_OPTIONS_AFTER:-{\}}" --ab-options "${AB_OPTIONS_BEFORE:-{\}}" \
        --ab-first $([ $((round % 2)) = 1 ] && echo before || echo after) \
        --out $W/ab/bench_after_$round.json --ab-out $W/ab/bench_before_$round.json > $W/ab/round_$round.log 2>&1
    done
    echo "exit 0" > $W/ab.status
  fi
  echo done > $W/chain.status
}

case "${1:-}" in
  start)
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
    keep_part "$2"
    rm -f $W/*.status  # an earlier chain's, on a machine kept warm
    export -f chain wait_before_tree; export W STEPS NCU_TOKENS NCU_SHAPES NCU_FLAGS NCU_KERNEL NCU_SECTIONS SUITE_STEPS LONG_STEPS LONG_EVERY KV_RUNS KV_ORDERS KV_REPEATS KV_KERNELS KV_CHUNKS KV_PAGES AB_ROUNDS AB_LENGTHS AB_SHAPES AB_REPS AB_DENSITIES AB_SKIP AB_OPTIONS_BEFORE AB_OPTIONS_AFTER AB_ARGS PROXYATTN_COMMIT
    setsid nohup bash -c chain > $W/chain.log 2>&1 &
    sleep 2; report ;;
  part)
    keep_part "$2"; report ;;
  run)  # STEPS in the foreground, on the package and binaries that "start" built
    STEPS="nobuild $STEPS" chain; report ;;
  wait)  # a fresh machine (the last one was released while idle) has no chain to wait for
    [ -f $W/chain.log ] || { echo "no session chain on this machine (released since start?): start again" >&2; exit 3; }
    for i in $(seq $(( ${2:-500} / 10 ))); do [ -f $W/chain.status ] && break; sleep 10; done
    report; tail -25 $W/estimate_cost.log 2>/dev/null ;;
  *) echo "usage: $0 start PART | part PART | run | wait SECONDS" >&2; exit 2 ;;
esac
