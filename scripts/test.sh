#!/usr/bin/env bash
# The tests on a fresh machine: build, every CTest test (the CUDA ones skip, saying so, without a
# GPU), then the Python package: install it (pinned build and test dependencies, torch and
# transformers included) and run its pytest tests and those of the evaluation code.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# The CUDA backend is compiled wherever nvcc is (its tests skip without a GPU), so that a CUDA
# build break shows here too.
cuda=OFF
if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then cuda=ON; fi
"$root/scripts/build.sh" -DPROXYATTN_CUDA=$cuda
(cd "$root/build" && ctest --output-on-failure -j2)
"$root/scripts/install_python.sh"
cd "$root"
python3 -m pytest -q -p no:cacheprovider python/tests \
  $(ls -d eval/tests eval/baselines/tests 2>/dev/null)
