#!/usr/bin/env bash
# Whether a change alters the machine code of the sm_90a kernels, without a GPU: builds the
# library's CUDA objects for sm_90a from the working tree and from REV (a commit), disassembles
# both (cuobjdump and nvdisasm from PyPI's nvidia-cuda-* wheels, pinned below) and compares each
# kernel's instructions, addresses and encodings left out. A refactor whose kernels all print "same" runs
# the code that was timed before it.
#   scripts/sass_diff.sh HEAD~1          # prints same / differs / only in one tree, per kernel
set -euo pipefail
rev=${1:?usage: scripts/sass_diff.sh REV}
root=$(cd "$(dirname "$0")/.." && pwd)
work=${SASS_DIFF_DIR:-/tmp/proxyattn_sass}
tools_version=13.5.37  # nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm (cuobjdump runs nvdisasm)
mkdir -p "$work"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
bin="$work/tools/nvidia/cu13/bin"
if [ ! -x "$bin/cuobjdump" ] || [ ! -x "$bin/nvdisasm" ]; then
  python3 -m pip download -q --no-deps -d "$work/wheels" "nvidia-cuda-cuobjdump==$tools_version" \
    "nvidia-cuda-nvdisasm==$tools_version"
  for w in "$work"/wheels/*.whl; do python3 -m zipfile -e "$w" "$work/tools"; done
  chmod +x "$bin/cuobjdump" "$bin/nvdisasm"
fi
tool="$bin/cuobjdump"
export PATH="$bin:$PATH"
# REV's files carry its commit time (git archive): a fresh build, so that no object of another
# REV counts as up to date.
rm -rf "$work/rev" "$work/build-rev" && mkdir -p "$work/rev"
git -C "$root" archive "$rev" | tar -x -C "$work/rev"
# One kernel per file, named by the kernel: its instructions, one a line (the /*addr*/ prefix and
# /* encoding */ dropped).
dump() {  # dump SOURCE_TREE BUILD_DIR OUT_DIR
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPROXYATTN_CUDA=ON \
    -DPROXYATTN_CUDA_GENCODE="-gencode=arch=compute_90a,code=sm_90a" > /dev/null
  cmake --build "$2" --target proxyattn > /dev/null
  rm -rf "$3" && mkdir -p "$3"
  # (objects without device code make cuobjdump fail: they add nothing)
  find "$2/src" -name '*.cu.o' | sort | while read -r o; do "$tool" -sass "$o" 2>/dev/null || true; done |
    awk -v out="$3" '
    # A kernel in an anonymous namespace carries a hash of its file path in its name: dropped
    # (the mangled length before _GLOBAL__N__ says how much).
    function plain(s,   digits, rest) {
      while (match(s, /[0-9]+_GLOBAL__N__/)) {
        digits = substr(s, RSTART, RLENGTH - length("_GLOBAL__N__"))
        rest = substr(s, RSTART + length(digits) + digits)
        s = substr(s, 1, RSTART - 1) "anon" rest
      }
      return s
    }
    /Function : / { name = plain($3); next }
    name != "" && /^[ \t]+\/\*[0-9a-f]+\*\// {
      line = $0
      sub(/^[ \t]+\/\*[0-9a-f]+\*\/[ \t]+/, "", line)
      sub(/[ \t]*\/\*.*$/, "", line)
      sub(/[ \t]*;[ \t]*$/, "", line)
      print line > (out "/" name)
    }'
}
dump "$root" "$work/build-tree" "$work/tree"
dump "$work/rev" "$work/build-rev" "$work/rev-sass"
# The same instructions up to register numbers, constant-bank offsets and immediates (a moved
# kernel parameter, say): "same shape".
shape() { sed -E 's/\bU?R[0-9]+/R/g; s/\bU?P[0-9]/P/g; s/0x[0-9a-f]+/X/g' "$1"; }
for f in "$work"/tree/*; do
  k=$(basename "$f")
  if [ ! -f "$work/rev-sass/$k" ]; then echo "only in the working tree: $k"
  elif cmp -s "$f" "$work/rev-sass/$k"; then echo "same ($(wc -l < "$f") instructions): $k"
  elif cmp -s <(shape "$f") <(shape "$work/rev-sass/$k"); then echo "same shape ($(wc -l < "$f") instructions): $k"
  else echo "differs ($(wc -l < "$work/rev-sass/$k") -> $(wc -l < "$f") instructions): $k"; fi
done
for f in "$work"/rev-sass/*; do [ -f "$work/tree/$(basename "$f")" ] || echo "only in $rev: $(basename "$f")"; done
