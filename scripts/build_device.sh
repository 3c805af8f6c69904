#!/usr/bin/env bash
# Builds the binaries that the GPU machine runs: sm_90a only (short compile), copied with libgomp
# into .device/, and what bench/gpu_session.sh carries in .gpu/: the CUDA tests with libgomp
# (device.tar.xz) and Highway's headers (libhwy-dev.deb: that machine has no package registry,
# and the Python package it builds needs them). Both folders are git-ignored.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
cmake -S "$root" -B "$root/build-dev" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPROXYATTN_CUDA=ON -DPROXYATTN_CUDA_GENCODE="-gencode=arch=compute_90a,code=sm_90a" >/dev/null
cmake --build "$root/build-dev"
mkdir -p "$root/.device"
cp "$root/build-dev/tools/proxyattn/proxyattn" "$root/build-dev/tests/proxyattn_cuda_tests" \
   "$root/build-dev/src/capi/libproxyattn_c.so" "$(g++ -print-file-name=libgomp.so.1)" "$root/.device/"
mkdir -p "$root/.gpu"
tar -cJf "$root/.gpu/device.tar.xz" -C "$root/.device" proxyattn_cuda_tests libgomp.so.1
(cd "$root/.gpu" && rm -f libhwy-dev*.deb && apt-get download -qq libhwy-dev && mv libhwy-dev*.deb libhwy-dev.deb)
