#!/usr/bin/env bash
# The accuracy suite, in the order of what matters most, each step resuming from the results
# already in RESULTS (a folder of JSON lines, one file per model):
#   1. Qwen2.5-Coder-0.5B at 32,672 tokens: dense, ProxyAttn's defaults and the two baselines
#      matched to their density;
#   2. SmolLM2-135M at 8,096 and 4,096 tokens: the same and the paper's preset;
#   3. Qwen at 16,384 and 8,192 tokens: the same;
#   4. Qwen at 32,672 tokens: the paper's preset;
#   5. SmolLM2 at 8,096 tokens: the options that keep more for the heads the proxy serves worst;
#   6. Qwen at 32,672 tokens, first 150 prompts: the ablations (each option off in turn, the
#      previous defaults, and the upper bounds of the options not built: stride 1 for the
#      stage-1 coverage of every key, a proxy per query head for a per-head agreement test);
#   7. SmolLM2 at 8,096 tokens: the baselines at the density of gamma 0.95;
#   8. Qwen at 32,672 tokens, every third prompt: the prompts prefilled in chunks of 8,192 tokens,
#      dense and ProxyAttn (against the cache, as serving engines prefill);
#   9. SmolLM2 at 8,096 tokens, more prompts of the three tasks it answers at all (passkey, single
#      number, multi-key: 45 of dense's 47 answers in step 2), PROMPTS/smollm2_more (the
#      build_prompts.py example): dense, the defaults and the two baselines, into smollm2_more.jsonl.
#  10. SmolLM2 at 8,096 tokens, the 600 prompts of step 9: the last query block's own cut
#      (last_block_gamma 0.99) and both baselines matched to it;
#  11. Qwen at 32,672 tokens: last_block_gamma 0.99 at gamma 0.92 and at gamma 0.91;
#  12. SmolLM2 at 8,096 tokens, the 600 prompts: gamma 0.91 with last_block_gamma 0.99 (the
#      last block's density given back by the other rows) and both baselines matched to it;
#  13. Qwen at 32,672 tokens: both baselines matched to gamma 0.91 with last_block_gamma 0.99;
#  14. SmolLM2 at 8,096 and 4,096 tokens (step 2's prompts) and 15. Qwen at 16,384 and 8,192
#      (step 3's): the current defaults and both baselines matched to them;
#  16. SmolLM2 at 8,096 tokens, the 600 prompts: budget_mode row_mass on the current defaults
#      (against step 12's last99-g91, the same but for the budget mode);
#  17. SmolLM2 at 8,096 tokens, 600 more prompts of its three answerable tasks (indices 230-429,
#      PROMPTS/smollm2_more2) and 18. Qwen at 16,384 tokens, 200 more of its eight answerable
#      tasks (indices 10-34, PROMPTS/qwen_more): dense, the defaults and both baselines matched,
#      where the defaults answered fewer than a baseline on the first prompts (a gap of 1-8 of 900
#      and 3 of 100, none significant). Their prompts:
#        python3 eval/build_prompts.py .model/smollm2 --texts .model/text --lengths 8096:600 --tasks passkey \
#          niah_single_number niah_multikey --first-index 230 --out .model/eval/smollm2_more2
#        python3 eval/build_prompts.py .model --texts .model/text --lengths 16384:200 --tasks passkey \
#          niah_single_number niah_single_word niah_single_uuid niah_multikey niah_multivalue \
#          niah_multiquery vt --first-index 10 --out .model/eval/qwen_more
#  19. 32 head columns on the current defaults: SmolLM2's 900 at 8,096 and Qwen's 300 at 32,672
#      (`bench/results/2026-12-04_cpu_smollm2_losses`: on the CPU the one option that brought back
#      SmolLM2's losses without losing as many)
#  20. What choosing the next default takes: 32 head columns where step 19 did not run them
#      (SmolLM2's 600 of step 17 and its 4,096-token prompts, Qwen at 16,384 and 8,192; step 19
#      answered 9 more of SmolLM2's 900 than the defaults and one fewer of Qwen's 300 at 32,672, at
#      0.1-0.2 points more density), and at Qwen's 16,384 (all 300) gamma 0.92 with and without the
#      last block's cut (the earlier defaults answered 67 of the first 100 there, the current 62:
#      5 / 0 discordant, p 0.063)
#  21, 22. The defaults since 2026-12-04 are 32 head columns (the rows named columns32-g91): both
#      baselines matched to them in every cell (21 where the margins were smallest)
#  23. Qwen at 16,384 tokens, 300 more prompts of its eight answerable tasks (indices 35-72,
#      PROMPTS/qwen_more2): dense, the defaults and both baselines matched, so that the cell where
#      the defaults and the XAttention-style selector differ by one prompt of 300 (8 / 9 discordant)
#      is judged on 600. Runs between step 22's SmolLM2 and Qwen parts (SmolLM2 arrives first).
#        python3 eval/build_prompts.py .model --texts .model/text --lengths 16384:300 --tasks passkey \
#          niah_single_number niah_single_word niah_single_uuid niah_multikey niah_multivalue \
#          niah_multiquery vt --first-index 35 --out .model/eval/qwen_more2
#  24. A study of stage 1's pooling (eval/baselines/pooling.py; not a library option): each head's
#      cells ranked by their mean summed proxy probability (POOLING, default sum) instead of the
#      largest, every row keeping as many blocks as the defaults' own mask, so that only which
#      blocks changes: Qwen's 600 prompts at 16,384 (the cell where the XAttention-style selector,
#      which ranks by block mass, answers more variable-tracking prompts), then its 300 at 32,672.
# Steps 1-9 ran the earlier defaults (gamma 0.92, last_block_gamma 0) under the name pa, and a run
# resumes by method name: the current defaults go under another name (last99-g91 in 11 and 12).
# SUITE_STEPS (default all: "1 2 3 ... 24") picks steps.
# Models: QWEN and SMOL (folders with the GGUF, eval/MODELS.md); prompts: PROMPTS/qwen and
# PROMPTS/smollm2 from eval/build_prompts.py.
#   bash eval/run_suite.sh /tmp/pa_eval
set -u
R=${1:?results folder}
Q=${QWEN:-/tmp/proxyattn_model}
S=${SMOL:-/tmp/proxyattn_smollm2}
P=${PROMPTS:-.model/eval}
mkdir -p "$R"
MAIN="dense pa paper=pa:preset=paper xattention@pa flexprefill@pa"
ABLATIONS="previous=pa:proxy_groups=1,budget_mode=row_ratio,gamma=0.95,exact_last_block=0,head_columns=0
  no-exact=pa:exact_last_block=0 no-columns=pa:head_columns=0 one-proxy=pa:proxy_groups=1 stride-1=pa:stride=1
  proxy-per-head=perhead layer0-dense=pa:dense_layers=0 gamma-0.9=pa:gamma=0.9"
SMOL_ABLATIONS="gamma-0.95=pa:gamma=0.95 columns-32=pa:head_columns=32 stride-2=pa:stride=2
  layer0-dense=pa:dense_layers=0 proxy-per-head=perhead"
step() {  # step N ARGS: run_eval.py ARGS if N is in SUITE_STEPS and the model is on this machine
  [[ " ${SUITE_STEPS:-$(seq -s ' ' 24)} " == *" $1 "* ]] || return 0
  shift
  # SUITE_WAIT_S: how long to wait for a model still being assembled (its parts arrive by call).
  for _ in $(seq $(( ${SUITE_WAIT_S:-0} / 5 ))); do ls "$1"/*.gguf > /dev/null 2>&1 && break; sleep 5; done
  ls "$1"/*.gguf > /dev/null 2>&1 || { echo "no model in $1: skipped"; return; }
  python3 eval/run_eval.py "$@" 2>&1 | grep -v -i -E "warn|de-quantizing|Loading weights"
}
step 1 "$Q" "$P/qwen" --lengths 32672 --detail 2 --methods dense pa xattention@pa flexprefill@pa --out "$R/qwen.jsonl"
step 2 "$S" "$P/smollm2" --detail 2 --methods $MAIN --out "$R/smollm2.jsonl"
step 3 "$Q" "$P/qwen" --lengths 16384 8192 --detail 2 --methods $MAIN --out "$R/qwen.jsonl"
step 4 "$Q" "$P/qwen" --lengths 32672 --methods "paper=pa:preset=paper" --out "$R/qwen.jsonl"
step 5 "$S" "$P/smollm2" --lengths 8096 --methods $SMOL_ABLATIONS --out "$R/smollm2.jsonl"
step 6 "$Q" "$P/qwen" --lengths 32672 --limit 150 --methods $ABLATIONS --out "$R/qwen.jsonl"
step 7 "$S" "$P/smollm2" --lengths 8096 --methods "xattention@pa:gamma=0.95" "flexprefill@pa:gamma=0.95" \
  --out "$R/smollm2.jsonl"
step 8 "$Q" "$P/qwen" --lengths 32672 --every 3 --methods "dense-chunks8k=dense:prefill_chunk=8192" \
  "pa-chunks8k=pa:prefill_chunk=8192" --out "$R/qwen.jsonl"
step 9 "$S" "$P/smollm2_more" --lengths 8096 --methods dense pa xattention@pa flexprefill@pa \
  --out "$R/smollm2_more.jsonl"
# The cut at gamma 0.92, the default until 2026-12-04 (its answers are named with the spec then,
# pa:last_block_gamma=0.99).
LAST="pa:gamma=0.92,last_block_gamma=0.99"
step 10 "$S" "$P/smollm2_more" --lengths 8096 --methods "last99=$LAST" "xattention@$LAST" "flexprefill@$LAST" \
  --out "$R/smollm2_more.jsonl"
LAST91="pa:gamma=0.91,last_block_gamma=0.99"
step 12 "$S" "$P/smollm2_more" --lengths 8096 --methods "last99-g91=$LAST91" "xattention@$LAST91" \
  "flexprefill@$LAST91" --out "$R/smollm2_more.jsonl"
step 16 "$S" "$P/smollm2_more" --lengths 8096 --methods "rowmass-g91=$LAST91,budget_mode=row_mass" \
  --out "$R/smollm2_more.jsonl"
step 11 "$Q" "$P/qwen" --lengths 32672 --methods "last99=$LAST" "last99-g91=$LAST91" --out "$R/qwen.jsonl"
step 13 "$Q" "$P/qwen" --lengths 32672 --methods "xattention@$LAST91" "flexprefill@$LAST91" --out "$R/qwen.jsonl"
NOW="last99-g91=$LAST91 xattention@$LAST91 flexprefill@$LAST91"  # the defaults since 2026-12-04
step 14 "$S" "$P/smollm2" --detail 2 --methods $NOW --out "$R/smollm2.jsonl"
step 15 "$Q" "$P/qwen" --lengths 16384 8192 --detail 2 --methods $NOW --out "$R/qwen.jsonl"
step 17 "$S" "$P/smollm2_more2" --lengths 8096 --methods dense $NOW --out "$R/smollm2_more.jsonl"
step 18 "$Q" "$P/qwen_more" --lengths 16384 --methods dense $NOW --out "$R/qwen.jsonl"
COLUMNS32="columns32-g91=$LAST91,head_columns=32"
step 19 "$S" "$P/smollm2_more" --lengths 8096 --methods "$COLUMNS32" --out "$R/smollm2_more.jsonl"
step 19 "$S" "$P/smollm2" --lengths 8096 --methods "$COLUMNS32" --out "$R/smollm2.jsonl"
step 19 "$Q" "$P/qwen" --lengths 32672 --methods "$COLUMNS32" --out "$R/qwen.jsonl"
step 20 "$S" "$P/smollm2_more2" --lengths 8096 --methods "$COLUMNS32" --out "$R/smollm2_more.jsonl"
step 20 "$S" "$P/smollm2" --lengths 4096 --methods "$COLUMNS32" --out "$R/smollm2.jsonl"
G92="g92-nocut=pa:gamma=0.92,last_block_gamma=0"  # the rows named pa, under a name of their own
step 20 "$Q" "$P/qwen" --lengths 16384 8192 --methods "$COLUMNS32" --out "$R/qwen.jsonl"
step 20 "$Q" "$P/qwen" --lengths 16384 --methods "last99=$LAST" "$G92" --out "$R/qwen.jsonl"
step 20 "$Q" "$P/qwen_more" --lengths 16384 --methods "$COLUMNS32" "last99=$LAST" "$G92" --out "$R/qwen.jsonl"
# Steps 21 and 22: the baselines matched to the defaults since 2026-12-04 (32 head columns, gamma
# 0.91, the last block's cut at 0.99), spelt out so that the rows keep their meaning; 21 the cells
# where the baselines matched to the earlier defaults came within 3 prompts, 22 the others.
C32="$LAST91,head_columns=32"
XA32="xattention@$C32" FP32="flexprefill@$C32"
step 21 "$S" "$P/smollm2" --lengths 4096 --methods $XA32 $FP32 --out "$R/smollm2.jsonl"
step 21 "$S" "$P/smollm2" --lengths 8096 --methods $FP32 --out "$R/smollm2.jsonl"
step 21 "$S" "$P/smollm2_more" --lengths 8096 --methods $FP32 --out "$R/smollm2_more.jsonl"
step 21 "$S" "$P/smollm2_more2" --lengths 8096 --methods $FP32 --out "$R/smollm2_more.jsonl"
step 21 "$Q" "$P/qwen" --lengths 16384 8192 --methods $XA32 $FP32 --out "$R/qwen.jsonl"
step 21 "$Q" "$P/qwen_more" --lengths 16384 --methods $XA32 $FP32 --out "$R/qwen.jsonl"
step 22 "$S" "$P/smollm2" --lengths 8096 --methods $XA32 --out "$R/smollm2.jsonl"
step 22 "$S" "$P/smollm2_more" --lengths 8096 --methods $XA32 --out "$R/smollm2_more.jsonl"
step 22 "$S" "$P/smollm2_more2" --lengths 8096 --methods $XA32 --out "$R/smollm2_more.jsonl"
step 23 "$Q" "$P/qwen_more2" --lengths 16384 --methods dense "$COLUMNS32" $XA32 $FP32 --out "$R/qwen.jsonl"
step 22 "$Q" "$P/qwen" --lengths 32672 --methods $XA32 $FP32 --out "$R/qwen.jsonl"
POOL="${POOLING:-sum}-pooling=$C32,pooling=${POOLING:-sum}"
step 24 "$Q" "$P/qwen" --lengths 16384 --methods "$POOL" --out "$R/qwen.jsonl"
step 24 "$Q" "$P/qwen_more" --lengths 16384 --methods "$POOL" --out "$R/qwen.jsonl"
step 24 "$Q" "$P/qwen_more2" --lengths 16384 --methods "$POOL" --out "$R/qwen.jsonl"
step 24 "$Q" "$P/qwen" --lengths 32672 --methods "$POOL" --out "$R/qwen.jsonl"
