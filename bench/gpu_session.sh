#!/usr/bin/env bash
# One accuracy-and-cost session on the GPU machine, a step per device call, the calls back to back
# (the machine keeps /tmp between calls while it stays warm). Logs and results go to $OUT.
#
#   start PART     build the Python package in the background; keep model part PART
#   part PART      keep one staged model part (eval/assemble_model.sh; SmolLM2's parts go to
#                  /tmp/proxyattn_smollm2); when the call carries .gpu/device.tar.xz (the CUDA
#                  binaries of scripts/build_device.sh), start the CUDA tests and then
#                  compute-sanitizer memcheck of the estimator's tests in the background
#   bench          wait for the package and the tests, then bench/estimate_cost.py (alone on the GPU)
#   eval           start eval/run_suite.sh in the background (results resume from .gpu/results)
#   wait SECONDS   wait for the suite (at most SECONDS), then report and copy the results
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1
W=/tmp/pa_session
mkdir -p $W

report() {  # what the background jobs did; at most 8 files back (the device tool's limit)
  [ -f $W/build.log ] && { echo "-- package build: $(cat $W/build.status 2>/dev/null || echo running)"; tail -2 $W/build.log; }
  [ -f $W/tests.log ] && { echo "-- CUDA tests: $(cat $W/tests.status 2>/dev/null || echo running)"; \
    grep -E "PASSED|FAILED|tests ran" $W/tests.log | tail -4; }
  [ -f $W/memcheck.log ] && { echo "-- memcheck: $(cat $W/memcheck.status 2>/dev/null || echo running)"; \
    grep -E "ERROR SUMMARY|PASSED|FAILED" $W/memcheck.log | tail -3; }
  [ -f $W/suite.log ] && { echo "-- suite: $(cat $W/suite.status 2>/dev/null || echo running)"; tail -3 $W/suite.log; }
  local f
  for f in build.log tests.log memcheck.log suite.log estimate_cost.log estimate_cost.json results/qwen.jsonl \
           results/smollm2.jsonl; do
    [ -f $W/$f ] && cp $W/$f "$OUT/"
  done
  return 0
}

keep_part() {
  local part=$1 dest=/tmp/proxyattn_model
  [[ $part == *smollm2* ]] && dest=/tmp/proxyattn_smollm2
  DEST=$dest bash eval/assemble_model.sh "$part" | tail -2
  [ -d .model/eval ] && mkdir -p $W/prompts && cp -r .model/eval/* $W/prompts/  # prompts carried with a part
  return 0
}

case "${1:-}" in
  start)
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
    setsid nohup bash -c "PROXYATTN_OFFLINE=1 PROXYATTN_CUDA=ON scripts/install_python.sh \
        -Ccmake.define.PROXYATTN_CPU_ARCH=x86-64-v3 \
        '-Ccmake.define.PROXYATTN_CUDA_GENCODE=-gencode=arch=compute_90a,code=sm_90a' > $W/build.log 2>&1; \
        echo exit \$? > $W/build.status" > /dev/null 2>&1 &
    keep_part "$2"; sleep 2; report ;;
  part)
    keep_part "$2"
    if [ -f .gpu/device.tar.xz ] && [ ! -f $W/tests.log ]; then
      mkdir -p .device && tar -xJf .gpu/device.tar.xz -C .device && cp -r .device $W/device
      setsid nohup bash -c "export LD_LIBRARY_PATH=$W/device; \
          timeout 300 $W/device/proxyattn_cuda_tests > $W/tests.log 2>&1; echo exit \$? > $W/tests.status; \
          timeout 400 compute-sanitizer --tool memcheck --error-exitcode 9 $W/device/proxyattn_cuda_tests \
            --gtest_filter='Cuda.Estimate*:Cuda.GammaOne*:Cuda.NanStays*' > $W/memcheck.log 2>&1; \
          echo exit \$? > $W/memcheck.status" > /dev/null 2>&1 &
      sleep 2
    fi
    report ;;
  bench)
    for i in $(seq 110); do [ -f $W/build.status ] && [ -f $W/memcheck.status ] && break; sleep 5; done
    report
    python3 -c "import proxyattn; assert proxyattn.cuda_available(); print('proxyattn', proxyattn.__file__)" || exit 1
    timeout 400 python3 bench/estimate_cost.py --lengths 32768 131072 --json $W/estimate_cost.json \
      2>&1 | tee $W/estimate_cost.log | tail -20
    cp $W/estimate_cost.* "$OUT/" ;;
  eval)
    mkdir -p $W/results
    cp .gpu/results/*.jsonl $W/results/ 2>/dev/null
    setsid nohup bash -c "PROMPTS=$W/prompts bash eval/run_suite.sh $W/results > $W/suite.log 2>&1; \
        echo exit \$? > $W/suite.status" \
      > /dev/null 2>&1 &
    sleep 60; report ;;
  wait)
    for i in $(seq $(( ${2:-500} / 10 ))); do [ -f $W/suite.status ] && break; sleep 10; done
    report ;;
  *) echo "usage: $0 start PART | part PART | bench | eval | wait SECONDS" >&2; exit 2 ;;
esac
