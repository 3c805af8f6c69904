#!/usr/bin/env bash
# Everything the CUDA issue reports, in one device session: tests, sanitizers, checks against
# torch SDPA and FlexAttention, the peer benchmark table, and the demo on the GPU.
# Binaries come prebuilt in .device/ (scripts/build_device.sh); logs and JSON go to $OUT.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/.device:${LD_LIBRARY_PATH:-}
export PROXYATTN_LIB=$PWD/.device/libproxyattn_c.so
SANITIZE=${SANITIZE:-1} bash bench/device_checks.sh
echo "== gpu_check.py"
timeout 200 python3 bench/gpu_check.py > "$OUT/gpu_check.log" 2>&1; echo "gpu_check exit $?"
grep -cE "PASS" "$OUT/gpu_check.log" | sed 's/^/PASS lines: /'; grep -E "FAIL" "$OUT/gpu_check.log" | head -5
echo "== cuda_bench.py"
timeout 300 python3 bench/cuda_bench.py ${BENCH_ARGS:-} --out "$OUT/cuda_bench.json" > "$OUT/cuda_bench.log" 2>&1
echo "cuda_bench exit $?"
echo "== demo on cuda, 65536 tokens"
.device/proxyattn demo --device cuda --tokens 65536 > "$OUT/demo_64k.txt" 2>&1; tail -9 "$OUT/demo_64k.txt"
tail -64 "$OUT/cuda_bench.log"
