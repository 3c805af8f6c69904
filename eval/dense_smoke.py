"""Quick check of the evaluation model with dense attention: a few retrieval prompts at 2K tokens
and at the model's longest context, greedy decoding, exact match. Runs on CUDA when present.

    python3 eval/dense_smoke.py /tmp/proxyattn_model                   # 2048 and max context
    python3 eval/dense_smoke.py .model --lengths 1024 --tasks passkey   # a short run on a CPU

A length of 0 stands for the model's longest context (max_position_embeddings, less the tokens
to generate).
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# The scripts of eval/ import each other by module name.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
import tasks  # noqa: E402
from load_model import load  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--lengths", type=int, nargs="+", default=[2048, 0])
    ap.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--tasks", nargs="+", default=["passkey"], choices=tasks.TASKS)
    ap.add_argument("--per-cell", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text", default=None, help="a text file or folder of *.txt (default eval/data/emma.txt)")
    ap.add_argument("--attn", default="sdpa", help="transformers attention implementation")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None, help="default bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    args = ap.parse_args()

    import torch
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    model, tokenizer = load(args.model_dir, dtype, device, attn_implementation=args.attn)
    count_tokens, format_prompt = tasks.hf_adapters(tokenizer)
    haystack = tasks.default_haystack(args.text)
    longest = model.config.max_position_embeddings - args.max_new_tokens
    lengths = [n if n > 0 else longest for n in args.lengths]

    total_ok = total = 0
    for n in lengths:
        samples = tasks.suite(count_tokens, format_prompt, tasks=args.tasks, lengths=(n,),
                              depths=args.depths, per_cell=args.per_cell, seed=args.seed,
                              haystack=haystack)
        ok = 0
        for s in samples:
            ids = tokenizer(s.text, add_special_tokens=count_tokens.add_special_tokens,
                            return_tensors="pt").to(device)
            t0 = time.time()
            with torch.no_grad():
                out = model.generate(**ids, max_new_tokens=args.max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
            good = tasks.is_correct(answer, s)
            ok += good
            print("%-14s %6d tokens depth %.2f (at %.3f)  expected %-8s got %-20r %s  %.1f s"
                  % (s.task, ids["input_ids"].shape[1], s.depth, s.actual_depth, s.answer,
                     answer.strip()[:20], "ok" if good else "WRONG", time.time() - t0), flush=True)
        print("dense %s accuracy at %d tokens: %d/%d" % (args.attn, n, ok, len(samples)), flush=True)
        total_ok += ok
        total += len(samples)
    print("dense %s accuracy overall: %d/%d = %.1f%%" % (args.attn, total_ok, total, 100.0 * total_ok / total))


if __name__ == "__main__":
    main()
