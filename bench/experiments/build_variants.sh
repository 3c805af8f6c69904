#!/usr/bin/env bash
# Builds variants of the library for a device A/B (bench/experiments/ab.sh) and packs them into
# .device_var/variants.tar.xz (git-ignored, compressed so that several fit the 64 MiB a device
# call carries). Each variant is NAME=PATCHES:DEFINES (PATCHES comma-separated, from this folder,
# or none; DEFINES comma-separated -D values for the CUDA compiler, or none), built from HEAD (or
# BASE, a commit the patches apply to: bench/experiments/README.md lists them) in
# one worktree under /tmp with the sm_90a flags of scripts/build_device.sh. The worktree and its
# build folder stay from one variant (and one call) to the next, so that a variant recompiles
# only what its patches or defines change.
#   BASE=2cb1ba0 bench/experiments/build_variants.sh base=none:none no_softmax=sm90_switches:PROXYATTN_SM90_EXP=1
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/bench/experiments
out=$root/.device_var
rm -rf "$out" && mkdir -p "$out/libs"
wt=/tmp/proxyattn-variant  # kept between calls too, with its build folder
rev=$(git -C "$root" rev-parse "${BASE:-HEAD}")  # BASE: the commit the patches apply to
if ! git -C "$wt" rev-parse --git-dir >/dev/null 2>&1; then
  rm -rf "$wt"; git -C "$root" worktree prune
  git -C "$root" worktree add --detach "$wt" "$rev" >/dev/null
fi
for spec in "$@"; do
  name=${spec%%=*}; rest=${spec#*=}; patches=${rest%%:*}; defines=${rest#*:}
  git -C "$wt" checkout -q -f --detach "$rev" && git -C "$wt" clean -q -fd -e build
  if [ "$patches" != none ]; then
    for p in ${patches//,/ }; do git -C "$wt" apply "$here/$p.patch"; done
  fi
  flags=""
  if [ "$defines" != none ]; then
    for d in ${defines//,/ }; do flags="$flags -D$d"; done
  fi
  echo "== $name: patches $patches, defines ${flags:-none}"
  cmake -S "$wt" -B "$wt/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPROXYATTN_CPU_ARCH=x86-64-v2 \
    -DPROXYATTN_CUDA=ON -DPROXYATTN_CUDA_GENCODE="-gencode=arch=compute_90a,code=sm_90a" \
    -DCMAKE_CUDA_FLAGS="$flags" >/dev/null
  cmake --build "$wt/build" --target proxyattn_c proxyattn_cuda_tests
  mkdir -p "$out/libs/$name"
  cp "$wt/build/src/capi/libproxyattn_c.so" "$wt/build/tests/proxyattn_cuda_tests" "$(g++ -print-file-name=libgomp.so.1)" \
    "$out/libs/$name/"
done
tar cJf "$out/variants.tar.xz" -C "$out/libs" . && rm -rf "$out/libs"
ls -la "$out"
