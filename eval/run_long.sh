#!/usr/bin/env bash
# Long prompts on the real model (Qwen2.5-Coder-0.5B with YaRN x4, 131,072 positions), each step
# resuming from what RESULTS already holds:
#   1. what ProxyAttn keeps on the model's own activations at 32K, 64K and 128K (per layer and per
#      head: density, recall, output error; one layer's mask at 128K): eval/long_density.py
#   2. time to first token and peak memory on the real prompts: bench/e2e_prefill.py --gguf
#   3. the retrieval tasks at 128K and 64K: dense first, then ProxyAttn's defaults (last99-g91; the
#      rows named pa are gamma 0.92 without the last block's own cut, the defaults until 2026-12-04)
#   4. time to first token of the Llama-3.1-8B architecture (random weights) at 128K and 256K, at
#      the density that step 1 measured at 128K
#   5. the 128K prompts prefilled in chunks of 16K (ProxyAttn against the cache, as serving engines
#      prefill), against step 3's one-call answers
#   6. step 3 for the defaults since 2026-12-04 (32 head columns: the rows named columns32-g91)
#   7. step 2 in eager and with the rest of the model compiled (bench/e2e_prefill.py --compile), on
#      the first prompt of each length (PROMPTS/ttft: eval/build_prompts.py LENGTH:1)
#   8. step 3 at 128K with the rest of the model compiled (dense and the library's defaults)
# Models: QWEN (eval/MODELS.md); prompts: PROMPTS/qwen (32,672 tokens) and PROMPTS/qwen_long
# (65,440 and 130,976 tokens, eval/build_prompts.py).
#   LONG_STEPS="1 2 3 4 5 6" bash eval/run_long.sh /tmp/pa_long
set -u
R=${1:?results folder}
Q=${QWEN:-/tmp/proxyattn_model}
P=${PROMPTS:-.model/eval}
mkdir -p "$R"
quiet() { "$@" 2>&1 | grep -v -i -E "warn|de-quantizing|Loading weights"; }
want() { [[ " ${LONG_STEPS:-1 2 3 4 5 6 7 8} " == *" $1 "* ]]; }  # LONG_STEPS picks steps
ls "$Q"/*.gguf > /dev/null 2>&1 || { echo "no model in $Q"; exit 1; }
LENGTHS="32672 65440 130976"
want 1 && { [ -f "$R/study/density.json" ] || quiet python3 eval/long_density.py "$Q" "$P/qwen" "$P/qwen_long" --yarn 4 \
  --lengths $LENGTHS --count 2 --settings defaults gamma=0.9 --out "$R/study"; }
want 2 && { [ -f "$R/ttft_qwen.json" ] || quiet python3 bench/e2e_prefill.py --gguf --model-dir "$Q" --yarn 4 \
  --prompts "$P/qwen" "$P/qwen_long" --lengths $LENGTHS \
  --modes sdpa-cudnn sdpa-flash none estimate dense proxyattn --json "$R/ttft_qwen.json"; }
if want 3; then
  for n in 130976 65440; do
    quiet python3 eval/run_eval.py "$Q" "$P/qwen_long" --yarn 4 --lengths $n \
      --methods dense "last99-g91=pa:gamma=0.91,last_block_gamma=0.99" --out "$R/qwen_yarn.jsonl"
  done
fi
if want 4; then
  D=$(python3 -c "
import json, sys
rows = json.load(open(sys.argv[1]))['rows']
d = [r['total_density'] for r in rows if r['length'] == 130976 and r['setting'] == 'defaults']
print('%.4f' % (sum(d) / len(d)))" "$R/study/density.json") || exit 1
  echo "the real model's density at 130,976 tokens: $D"
  [ -f "$R/ttft_llama.json" ] || quiet python3 bench/e2e_prefill.py --lengths 131072 262144 --repeats 1 \
    --modes sdpa-cudnn sdpa-flash none estimate fixed-$D dense --json "$R/ttft_llama.json"
fi
# LONG_EVERY: every so many-th prompt only (each takes about 3 s at 128K), spread over the tasks
want 5 && quiet python3 eval/run_eval.py "$Q" "$P/qwen_long" --yarn 4 --lengths 130976 \
  --methods "pa-chunks16k=pa:prefill_chunk=16384" --every ${LONG_EVERY:-1} --out "$R/qwen_yarn.jsonl"
if want 6; then
  for n in 130976 65440; do
    quiet python3 eval/run_eval.py "$Q" "$P/qwen_long" --yarn 4 --lengths $n \
      --methods dense "columns32-g91=pa:gamma=0.91,last_block_gamma=0.99,head_columns=32" --out "$R/qwen_yarn.jsonl"
  done
fi
want 7 && { [ -f "$R/ttft_qwen_compiled.json" ] || quiet python3 bench/e2e_prefill.py --gguf --model-dir "$Q" \
  --yarn 4 --prompts "$P/ttft" --lengths $LENGTHS --modes sdpa-cudnn sdpa-flash none estimate dense proxyattn \
  --compile --json "$R/ttft_qwen_compiled.json"; }
want 8 && quiet python3 eval/run_eval.py "$Q" "$P/qwen_long" --yarn 4 --lengths 130976 --compile \
  --methods dense-compiled=dense defaults-compiled=pa --out "$R/qwen_yarn.jsonl"
