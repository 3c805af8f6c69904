#!/usr/bin/env bash
# Installs the Python package `proxyattn` from this checkout with pinned build dependencies
# (python/requirements-test.txt). Without a GPU the CUDA backend is left out of the extension
# (the C++ build still compiles it when nvcc is present); set PROXYATTN_CUDA=ON or OFF to choose.
# PROXYATTN_OFFLINE=1 installs nothing else and uses what the machine has (a GPU machine without
# network). Extra arguments go to pip, for example -Ccmake.define.PROXYATTN_CUDA_GENCODE=...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
offline=()
if [ "${PROXYATTN_OFFLINE:-0}" = 1 ]; then
  offline=(--no-index --no-deps)
else
  python3 -m pip install -q --disable-pip-version-check -r "$root/python/requirements-test.txt"
fi
cuda=${PROXYATTN_CUDA:-}
if [ -z "$cuda" ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then cuda=AUTO; else cuda=OFF; fi
fi
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
python3 -m pip install -q --disable-pip-version-check --no-build-isolation "${offline[@]}" \
  -Ccmake.define.PROXYATTN_CUDA="$cuda" "$@" "$root"
python3 -c "import proxyattn; print('proxyattn', proxyattn.__version__, 'CUDA:', proxyattn.cuda_available())"
