"""Captures the post-RoPE q, k, v of every layer of the evaluation model on real prompts (CPU, fp32).

A transformers attention function ("study_capture") saves each layer's inputs as
/tmp/study/<tag>/L<layer>.pt = {"q": [n, 14, 64], "k": [n, 2, 64], "v": [n, 2, 64]} (float32)
and then runs transformers' sdpa. Only the base model runs (no lm_head: 16K x 152K logits
would not fit), one forward, no generation.

    python3 eval/study/capture.py --length 16384 --out /tmp/study
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
EVAL = os.path.dirname(HERE)
ROOT = os.path.dirname(EVAL)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") not in (HERE, EVAL, ROOT)] + [ROOT, EVAL, HERE]
import torch  # noqa: E402
import transformers  # noqa: E402
import transformers.masking_utils  # noqa: E402

import study_lib as S  # noqa: E402
from build_prompts import read_prompts  # noqa: E402
from load_model import load  # noqa: E402

_state = {"dir": None}


def capture_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    if _state["dir"] is not None and query.shape[2] > 1:
        q, k, v = (x[0].transpose(0, 1).contiguous().float() for x in (query, key, value))
        torch.save({"q": q, "k": k, "v": v, "scale": scaling},
                   S.layer_file(_state["dir"], module.layer_idx))
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                  scaling=scaling, **kwargs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=os.path.join(ROOT, ".model"))
    ap.add_argument("--prompts", default=os.path.join(ROOT, ".model", "prompts.json"),
                    help="token ids from eval/build_prompts.py (built from eval/tasks.py)")
    ap.add_argument("--length", type=int, default=16384)
    ap.add_argument("--depth", type=float, default=0.5)
    ap.add_argument("--tasks", nargs="+", default=["passkey", "niah_multikey"])
    ap.add_argument("--out", default="/tmp/study")
    args = ap.parse_args()

    torch.set_grad_enabled(False)
    model, _ = load(args.model_dir, "float32", "cpu")
    transformers.AttentionInterface.register("study_capture", capture_forward)
    transformers.AttentionMaskInterface.register("study_capture", transformers.masking_utils.sdpa_mask)
    model.set_attn_implementation("study_capture")
    spec = read_prompts(args.prompts)
    for task in args.tasks:
        p = next(p for p in spec["prompts"]
                 if p["task"] == task and p["length"] == args.length and p["depth"] == args.depth)
        tag = "%s_%d_d%.2f" % (task, args.length, args.depth)
        _state["dir"] = os.path.join(args.out, tag)
        os.makedirs(_state["dir"], exist_ok=True)
        ids = torch.tensor([p["ids"]])
        t0 = time.time()
        model.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        with open(os.path.join(_state["dir"], "meta.json"), "w") as f:
            json.dump(dict(task=task, length=args.length, tokens=ids.shape[1], depth=args.depth,
                           actual_depth=p["actual_depth"], answer=p["answer"]), f)
        print("%s: %d tokens, forward %.0f s" % (tag, ids.shape[1], time.time() - t0), flush=True)


if __name__ == "__main__":
    main()
