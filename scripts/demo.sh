#!/usr/bin/env bash
# The main job on a fresh machine: build the command-line tool, then run the demo on the embedded
# input (on the GPU when there is one, else on the CPU). Extra arguments go to `proxyattn demo`.
# Without a GPU the CUDA backend is not compiled (-DPROXYATTN_CUDA=ON in scripts/build.sh does).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
TARGET=proxyattn_cli "$root/scripts/build.sh" -DPROXYATTN_CUDA=AUTO
exec "$root/build/tools/proxyattn/proxyattn" demo "$@"
