#!/usr/bin/env bash
# The tests on a fresh machine: build, then every CTest test (the CUDA ones skip, saying so,
# without a GPU), then the Python tests of the C ABI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/build.sh"
(cd "$root/build" && ctest --output-on-failure -j2)
if [ -d "$root/python/tests" ]; then
  python3 -c "import pytest, numpy" 2>/dev/null || python3 -m pip install -q "pytest==8.3.3" "numpy==1.26.4"
  PROXYATTN_LIB="$root/build/src/capi/libproxyattn_c.so" python3 -m pytest -q "$root/python/tests"
fi
