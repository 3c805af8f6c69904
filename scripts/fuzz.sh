#!/usr/bin/env bash
# Runs the libFuzzer targets (fuzz/) with clang, ASan and UBSan: each for RUNS executions in all
# (default 10 million), one process per core, from its kept corpus, then merges what they found
# into the corpus (fuzz/corpus/<target>/, kept in the repository). Logs go to
# build-fuzz/<target>.log; a finding stops its process and leaves a crash-* (or leak-, timeout-,
# oom-) file in build-fuzz/.
#   scripts/fuzz.sh [RUNS]        TARGETS="mask paged" scripts/fuzz.sh runs only those
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-10000000}
"$root/scripts/setup.sh"
if ! command -v clang++-14 >/dev/null || [ ! -d /usr/lib/llvm-14/lib/clang/14.0.6/lib/linux ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq clang-14 libclang-rt-14-dev libomp-14-dev >/dev/null
fi
cmake -S "$root" -B "$root/build-fuzz" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPROXYATTN_CUDA=OFF \
  -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_C_COMPILER=clang-14 -DPROXYATTN_FUZZ=ON >/dev/null
cmake --build "$root/build-fuzz" --target safetensors_fuzz mask_fuzz paged_fuzz
cd "$root/build-fuzz"
export OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=1
jobs=$(getconf _NPROCESSORS_ONLN)  # not nproc: it follows OMP_NUM_THREADS
status=0
for t in ${TARGETS:-safetensors mask paged}; do
  # One process per core, each RUNS / cores executions, sharing the corpus folder new_<target>.
  rm -f fuzz-*.log && mkdir -p "new_$t"
  ./fuzz/${t}_fuzz -runs=$((runs / jobs)) -jobs=$jobs -workers=$jobs -max_len=4096 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 "new_$t" "$root/fuzz/corpus/$t" > /dev/null 2>&1 || status=1
  cat fuzz-*.log > "$t.log"
  total=$(grep -h "stat::number_of_executed_units" fuzz-*.log | awk '{s += $2} END {print s + 0}')
  echo "$t: $total executions in $jobs processes; findings: $(ls crash-* leak-* timeout-* oom-* 2>/dev/null | wc -l)"
  grep -h -E "ERROR|SUMMARY" "$t.log" | head -5 || true
  ./fuzz/${t}_fuzz -merge=1 "$root/fuzz/corpus/$t" "new_$t" > "merge_$t.log" 2>&1 || status=1
done
exit $status
