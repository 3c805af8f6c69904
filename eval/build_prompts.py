"""Builds the evaluation prompts once, on any machine, with the model's own tokenizer (read from
its GGUF file) and chat template, so that the GPU machine spends no time on text:

    python3 eval/build_prompts.py .model --texts .model/text --lengths 8192:100 16384:100 32768:300 \\
        --out .model/eval/qwen

writes OUT/corpus.json.gz (the six novels as token ids, eval/tasks.Corpus) and
OUT/prompts.json.gz (per prompt its task, length, index, answers and segments: a few kilobytes
for any length). LENGTH:COUNT builds COUNT prompts of exactly LENGTH tokens, the tasks in turn
(eval/tasks.TASKS, or --tasks), so that every task gets an equal share. A prompt is fixed by
(seed, task, length, index); --first-index starts each task's indices there, so that a second
set (say, more prompts of the tasks a small model answers at all) shares none with the first:

    python3 eval/build_prompts.py .model/smollm2 --texts .model/text --lengths 8096:600 \
        --tasks passkey niah_single_number niah_multikey --first-index 30 --out .model/eval/smollm2_more
"""
import argparse
import gzip
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]  # eval/ modules by name
import tasks  # noqa: E402
from load_model import find_gguf  # noqa: E402


def write_json(path, obj):
    with (gzip.open if path.endswith(".gz") else open)(path, "wt") as f:
        json.dump(obj, f)


def read_json(path):
    with (gzip.open if path.endswith(".gz") else open)(path, "rt") as f:
        return json.load(f)


def read_prompts(folder):
    """(corpus, spec) from a folder written by main(): spec holds the prompts as dicts."""
    return tasks.Corpus.from_json(read_json(os.path.join(folder, "corpus.json.gz"))), \
        read_json(os.path.join(folder, "prompts.json.gz"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--texts", default=None, help="a folder of novels (*.txt); default eval/data/emma.txt only")
    ap.add_argument("--lengths", nargs="+", default=["8192:100", "16384:100", "32768:300"],
                    help="LENGTH:COUNT pairs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", nargs="+", choices=tasks.TASKS, default=list(tasks.TASKS),
                    help="the tasks, in turn (default: all ten)")
    ap.add_argument("--first-index", type=int, default=0, help="each task's first prompt index")
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args()

    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir, gguf_file=find_gguf(args.model_dir))
    with_offsets, encode, template = tasks.hf_adapters(tokenizer)
    t0 = time.time()
    corpus = tasks.Corpus.from_texts(tasks.load_texts(args.texts), with_offsets)
    print(f"corpus: {', '.join(f'{n} {len(corpus.books[n])}' for n in corpus.names)} tokens "
          f"({time.time() - t0:.0f} s)", flush=True)
    builder = tasks.Builder(corpus, encode, template, seed=args.seed)
    prompts = []
    for spec in args.lengths:
        length, count = (int(x) for x in spec.split(":"))
        t0 = time.time()
        for i in range(count):
            task = args.tasks[i % len(args.tasks)]
            prompts.append(builder.build(task, length, args.first_index + i // len(args.tasks)).to_json())
        print(f"{length} tokens: {count} prompts ({time.time() - t0:.0f} s)", flush=True)
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "corpus.json.gz"), corpus.to_json())
    eos = tokenizer.eos_token_id
    write_json(os.path.join(args.out, "prompts.json.gz"),
               dict(seed=args.seed, model=find_gguf(args.model_dir), template=list(template),
                    pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
                    prompts=prompts))
    print(f"wrote {args.out}: {len(prompts)} prompts, "
          f"{sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out)) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
