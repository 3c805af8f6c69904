#!/usr/bin/env bash
# On the H200 machine (no network; carry .gpu from scripts/build_device.sh): builds the Python package with the CUDA backend for sm_90a
# against the torch and nanobind already installed there, runs the package's tests, then the
# end-to-end prefill timing with the arguments given (none: skip it). Results go to $OUT.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}
mkdir -p "$out"
python3 -c "import nanobind, scikit_build_core, torch, transformers as t; print('nanobind', nanobind.__version__, 'skbuild', scikit_build_core.__version__, 'torch', torch.__version__, 'transformers', t.__version__)"
start=$(date +%s)
mkdir -p /tmp/hwy && dpkg -x .gpu/libhwy-dev.deb /tmp/hwy  # Highway's headers (scripts/build_device.sh)
PROXYATTN_OFFLINE=1 PROXYATTN_CUDA=ON scripts/install_python.sh -Ccmake.define.HWY_INCLUDE_DIR=/tmp/hwy/usr/include \
  "-Ccmake.define.PROXYATTN_CUDA_GENCODE=-gencode=arch=compute_90a,code=sm_90a" 2>&1 | tail -30
echo "package build: $(( $(date +%s) - start )) s"
python3 -c "import proxyattn; assert proxyattn.cuda_available(), 'CUDA backend missing'; print('proxyattn CUDA ok')" || exit 1
python3 -m pytest -q -p no:cacheprovider -rs python/tests --ignore=python/tests/test_ctypes_cpu.py ${PYTEST_ARGS:-} 2>&1 | tee "$out/pytest.txt" | tail -25
if [ $# -gt 0 ]; then
  python3 bench/e2e_prefill.py "$@" --json "$out/e2e.json" 2>&1 | grep -v -i warn | tee "$out/e2e.txt"
fi
