#!/usr/bin/env bash
# Checks that the host tests can fail: builds copies of the library with one deliberate bug
# each (in the estimator, the rules and the attention) and expects the test suite to fail on
# every one. Prints one line per mutation; exits 1 if any mutation survives.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# file @@ original text @@ mutated text @@ what the mutation breaks
mutations=(
  "src/cpu/estimate.cpp@@cell = v > cell ? v : cell;@@cell = v < cell ? v : cell;@@stage 1 min pooling instead of max"
  "src/cpu/estimate.cpp@@std::min(keys, first + i - k0 + 1)@@keys@@stage 2 without the causal mask"
  "src/cpu/estimate.cpp@@(ka == kb && a < b)@@(ka == kb && a > b)@@ties ranked higher index first"
  "src/cpu/estimate.cpp@@const std::int64_t t = p.kv_token(s, a * stride);@@const std::int64_t t = p.kv_token(s, a * stride + (stride > 1));@@proxy reads the wrong strided token"
  "src/core/rules.hpp@@? ceil_div(k_h * eligible, nb) : k_h;@@? (k_h * eligible) / nb : k_h;@@row budget rounds down"
  "src/core/rules.hpp@@return keep_sink && m > 0 ? 2 : 1;@@return 1;@@sink not forced"
  "src/cpu/attention.cpp@@std::min(keys, q0 + i - k0 + 1)@@keys@@attention without the causal mask in the diagonal block"
  "src/reference/estimate.cpp@@for (std::int64_t i = keys - rows; i < keys; ++i) {@@for (std::int64_t i = keys - rows; i + 1 < keys; ++i) {@@reference stage 2 drops the last query"
  "src/cpu/estimate.cpp@@load_row(q, p.seq_begin(s) + a * stride - offset@@load_row(q, p.seq_begin(s) + a * stride@@a chunk's proxy queries read from the wrong token"
  "src/core/plan_impl.hpp@@* page + t % page;@@* page + (t + 1) % page;@@paged keys read from the wrong slot"
)
survived=0
for m in "${mutations[@]}"; do
  file=${m%%@@*}; rest=${m#*@@}; from=${rest%%@@*}; rest=${rest#*@@}; to=${rest%%@@*}; what=${rest#*@@}
  rm -rf "$work/src" "$work/build" && mkdir -p "$work/src"  # a fresh build: tar keeps the old mtimes
  (cd "$root" && tar cf - --exclude='./build*' --exclude=./.device --exclude=./.gpu --exclude=./.git .) | (cd "$work/src" && tar xf -)
  if ! grep -qF -- "$from" "$work/src/$file"; then
    echo "MISSING  $what (pattern not found in $file)"; survived=1; continue
  fi
  python3 - "$work/src/$file" "$from" "$to" <<'PY'
import sys
path, old, new = sys.argv[1:]
s = open(path).read()
open(path, "w").write(s.replace(old, new, 1))
PY
  cmake -S "$work/src" -B "$work/build" -G Ninja -DPROXYATTN_CUDA=OFF -DPROXYATTN_BUILD_TOOLS=ON >/dev/null 2>&1
  if ! cmake --build "$work/build" --target proxyattn_tests >/dev/null 2>&1; then
    echo "BUILD?   $what (did not compile)"; survived=1; continue
  fi
  "$work/build/tests/proxyattn_tests" --gtest_brief=1 >/dev/null 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    echo "SURVIVED $what"; survived=1
  elif [ $rc -ge 128 ]; then
    echo "caught   $what (the tests crashed)"
  else
    echo "caught   $what"
  fi
done
exit $survived
