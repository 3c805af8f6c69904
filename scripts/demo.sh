#!/usr/bin/env bash
# The main job on a fresh machine: build the command-line tool, then run the demo on the embedded
# input (on the GPU when there is one, else on the CPU). Extra arguments go to `proxyattn demo`.
# Without a GPU the CUDA backend is not compiled (-DPROXYATTN_CUDA=ON in scripts/build.sh does).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPROXYATTN_CUDA=AUTO >/dev/null
cmake --build "$root/build" --target proxyattn_cli
exec "$root/build/tools/proxyattn/proxyattn" demo "$@"
