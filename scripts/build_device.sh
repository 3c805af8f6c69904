#!/usr/bin/env bash
# Builds the binaries that bench/run_h200.sh runs on the GPU machine: sm_90a only (short
# compile), copied with libgomp into .device/ (git-ignored).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
cmake -S "$root" -B "$root/build-dev" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPROXYATTN_CUDA=ON -DPROXYATTN_CUDA_GENCODE="-gencode=arch=compute_90a,code=sm_90a" >/dev/null
cmake --build "$root/build-dev"
mkdir -p "$root/.device"
cp "$root/build-dev/tools/proxyattn/proxyattn" "$root/build-dev/tests/proxyattn_cuda_tests" \
   "$root/build-dev/src/capi/libproxyattn_c.so" "$(g++ -print-file-name=libgomp.so.1)" "$root/.device/"
