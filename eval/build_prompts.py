"""Builds the evaluation prompts once, on any machine, and saves their token ids, so that the GPU
machine spends no time fitting prompts: tasks x lengths x depths from eval/tasks.py, tokenised
with the model's own tokenizer (read from its GGUF file) and its chat template.

    python3 eval/build_prompts.py .model/assembled --lengths 8192 16384 32744 --out .model/prompts.json

An --out ending in .gz is written gzip-compressed (run_eval.py reads either).
"""
import argparse
import gzip
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]  # see dense_smoke.py
import tasks  # noqa: E402
from load_model import find_gguf  # noqa: E402


def _open(path, mode):
    return (gzip.open if path.endswith(".gz") else open)(path, mode)


def read_prompts(path):
    """The prompt file written by main(), plain or gzip-compressed: {seed, pad_token_id, prompts}."""
    with _open(path, "rt") as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--lengths", type=int, nargs="+", default=[8192, 16384, 32744])
    ap.add_argument("--depths", type=float, nargs="+", default=list(tasks.DEPTHS))
    ap.add_argument("--tasks", nargs="+", default=list(tasks.TASKS), choices=tasks.TASKS)
    ap.add_argument("--per-cell", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir, gguf_file=find_gguf(args.model_dir))
    count_tokens, format_prompt = tasks.hf_adapters(tokenizer)
    haystack = tasks.default_haystack()
    prompts = []
    for n in args.lengths:
        t0 = time.time()
        for s in tasks.suite(count_tokens, format_prompt, tasks=args.tasks, lengths=(n,), depths=args.depths,
                             per_cell=args.per_cell, seed=args.seed, haystack=haystack):
            ids = tokenizer(s.text, add_special_tokens=count_tokens.add_special_tokens)["input_ids"]
            prompts.append(dict(task=s.task, length=n, depth=s.depth, index=s.index, answer=s.answer,
                                actual_depth=s.actual_depth, ids=ids))
        print(f"{n} tokens: {len(prompts)} prompts so far, {time.time() - t0:.0f} s", flush=True)
    with _open(args.out, "wt") as f:
        json.dump(dict(seed=args.seed, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                       prompts=prompts), f)


if __name__ == "__main__":
    main()
