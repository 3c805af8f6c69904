#!/usr/bin/env bash
# The main job on a fresh machine: build, then run the demo on the embedded input (on the GPU
# when there is one, else on the CPU). Extra arguments go to `proxyattn demo`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/build.sh"
exec "$root/build/tools/proxyattn/proxyattn" demo "$@"
