#!/usr/bin/env bash
# CI's time, phase by phase, for two commits on this machine: fresh clones in ABBA order (A, B,
# B, A, ...), each running the steps of `.ci/run` one at a time: the C++ build (the CUDA backend
# too where nvcc is, as scripts/test.sh does), CTest, the Python package's install, pytest, and
# the sanitizer build and tests (scripts/sanitize.sh). Whatever the machine has installed is
# reused by both, so the install phase times the package's own build.
#
#   bash bench/ci_time.sh 741fc82 HEAD [ROUNDS]      # ROUNDS (default 2) of the pair
#
# Prints "tag commit phase seconds rc" lines; every phase's log goes to $OUT (default
# /tmp/ci_time) as <round>_<tag>_<phase>.log.
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: $0 REV_A REV_B [ROUNDS]" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/ci_time}
mkdir -p "$OUT"
revs=("$1" "$2")
for round in $(seq "${3:-2}"); do
  order=(0 1)
  [ $((round % 2)) = 0 ] && order=(1 0)
  for i in "${order[@]}"; do
    tag=$([ "$i" = 0 ] && echo A || echo B)
    dir=$OUT/clone_$tag
    rm -rf "$dir" && git clone -q "$repo" "$dir" && git -C "$dir" checkout -q "$(git -C "$repo" rev-parse "${revs[$i]}")"
    commit=$(git -C "$dir" log --format=%h -1)
    phase() {
      local name=$1 start rc
      shift
      start=$(date +%s.%N)
      (cd "$dir" && "$@") > "$OUT/${round}_${tag}_${name}.log" 2>&1
      rc=$?
      echo "$tag $commit $name $(echo "$(date +%s.%N) - $start" | bc) $rc"
    }
    cuda=OFF
    if command -v nvcc > /dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then cuda=ON; fi
    phase build ./scripts/build.sh -DPROXYATTN_CUDA=$cuda
    phase ctest bash -c "cd build && ctest --output-on-failure -j2"
    phase install ./scripts/install_python.sh
    # An empty inductor cache, as on CI's fresh machine (the compile tests' kernels are not reused);
    # older trees ran part of the Python tests through the C ABI library of the build.
    envs=(env "TORCHINDUCTOR_CACHE_DIR=$dir/.inductor")
    grep -q PROXYATTN_LIB "$dir/scripts/test.sh" && envs+=("PROXYATTN_LIB=$dir/build/src/capi/libproxyattn_c.so")
    phase pytest "${envs[@]}" bash -c 'python3 -m pytest -q -p no:cacheprovider python/tests $(ls -d eval/tests eval/baselines/tests 2>/dev/null)'
    phase sanitize ./scripts/sanitize.sh
  done
done
