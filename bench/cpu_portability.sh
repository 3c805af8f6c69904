#!/usr/bin/env bash
# One CPU build on other CPUs, emulated (qemu user mode): the x86-64 test binary of build/ on a
# CPU without AVX-512 (Haswell: AVX2) and one without AVX (Nehalem: SSE4.2), where the dispatch
# must pick that level and nothing may use a wider one (an illegal instruction would stop it); then
# a cross build for AArch64 (NEON) whose CTest tests run under qemu-aarch64.
#   bash bench/cpu_portability.sh OUT_DIR       (needs build/ from scripts/build.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?output folder}
mkdir -p "$out"
need=()
command -v qemu-x86_64 >/dev/null || need+=(qemu-user)
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
[ -d /usr/src/googletest ] || need+=(googletest)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
tests="$root/build/tests/proxyattn_tests"
filter='CpuBackend.EveryKernelLevelMatchesReference:CpuBackend.NonFiniteKeysAndValuesStayInTheRowsThatSeeThem:CpuBackend.GammaOneIsDenseAttention'
for cpu in Haswell Nehalem; do
  { echo "qemu-x86_64 -cpu $cpu"
    qemu-x86_64 -cpu $cpu "$root/build/tools/proxyattn/proxyattn" demo --device cpu --tokens 600 --q-heads 4 \
      --kv-heads 2 --head-dim 32 2>/dev/null | grep "^backend"
    qemu-x86_64 -cpu $cpu "$tests" --gtest_filter="$filter" 2>&1 | tail -3; } > "$out/x86_$cpu.txt" 2>&1
done
# AArch64: GoogleTest and the library built with the cross compiler, Highway's headers copied
# apart (so that the host's /usr/include stays out of the cross build).
arm=/tmp/proxyattn-aarch64
mkdir -p $arm/hwy && cp -r /usr/include/hwy $arm/hwy/
cross=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64
       -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc)
cmake -S /usr/src/googletest -B $arm/gtest "${cross[@]}" -DBUILD_GMOCK=OFF -DCMAKE_INSTALL_PREFIX=$arm/prefix >/dev/null
cmake --build $arm/gtest >/dev/null && cmake --install $arm/gtest >/dev/null
cmake -S "$root" -B $arm/build "${cross[@]}" -DCMAKE_PREFIX_PATH=$arm/prefix -DCMAKE_FIND_ROOT_PATH=$arm/prefix \
  -DHWY_INCLUDE_DIR=$arm/hwy -DPROXYATTN_CUDA=OFF -DPROXYATTN_BUILD_TOOLS=OFF -DPROXYATTN_BUILD_CAPI=OFF \
  "-DCMAKE_CROSSCOMPILING_EMULATOR=qemu-aarch64;-L;/usr/aarch64-linux-gnu" >/dev/null
cmake --build $arm/build >/dev/null
# The install test builds a consumer with the host compiler: not meaningful in a cross build.
(cd $arm/build && ctest -j2 -E '^package_find_package$' 2>&1 | tail -4) > "$out/aarch64.txt"
cat "$out"/x86_*.txt "$out/aarch64.txt"
