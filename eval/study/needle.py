"""Does each head keep the needle's key block in the question's query block?

For one captured prompt (capture.py): finds the key blocks that hold the answer's tokens, then per
layer and query head measures the dense attention mass that the last query block (the question)
puts on them, and whether ProxyAttn's mask and the XAttention-style selector's mask (matched to
ProxyAttn's density on that layer) keep them in that row. A retrieval prompt is answered when the
heads that read the needle still see it; this says which selector drops them.

    python3 eval/study/capture.py --prompts .model/prompts_short.json.gz --length 8192 --depth 0.5 \
        --tasks passkey --out /tmp/study
    python3 eval/study/needle.py /tmp/study/passkey_8192_d0.50 --gamma 0.9 --groups 2 --budget-mode last_row_count
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
EVAL = os.path.dirname(HERE)
ROOT = os.path.dirname(EVAL)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") not in (HERE, EVAL, ROOT)] + [ROOT, EVAL, HERE]
import torch  # noqa: E402

import proxyattn  # noqa: E402
import study_lib as S  # noqa: E402
from build_prompts import read_prompts  # noqa: E402
from eval.baselines import match_density  # noqa: E402
from load_model import find_gguf  # noqa: E402

BLOCK = S.B


def needle_blocks(ids, answer, tokenizer):
    """Key blocks holding the answer's tokens: the first place where the answer's token ids
    appear in the prompt (the needle; the question does not repeat the answer)."""
    target = tokenizer(answer, add_special_tokens=False)["input_ids"]
    for i in range(len(ids) - len(target) + 1):
        if ids[i:i + len(target)] == target:
            return sorted({t // BLOCK for t in range(i, i + len(target))})
    raise SystemExit(f"the answer {answer!r} (tokens {target}) is not in the prompt")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture_dir")
    ap.add_argument("--model-dir", default=os.path.join(ROOT, ".model"))
    ap.add_argument("--prompts", default=os.path.join(ROOT, ".model", "prompts_short.json.gz"))
    ap.add_argument("--gamma", type=float, default=0.9)
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--budget-mode", default="last_row_count")
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--min-mass", type=float, default=0.05, help="a head 'reads the needle' above this mass")
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    from transformers import AutoTokenizer
    meta = json.load(open(os.path.join(args.capture_dir, "meta.json")))
    prompt = next(p for p in read_prompts(args.prompts)["prompts"] if p["task"] == meta["task"] and p["length"] == meta["length"]
                  and p["depth"] == meta["depth"])
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir, gguf_file=find_gguf(args.model_dir))
    blocks = needle_blocks(prompt["ids"], prompt["answer"], tokenizer)
    options = dict(gamma=args.gamma, proxy_groups=args.groups, budget_mode=args.budget_mode, stride=args.stride)
    print(f"{meta['task']} {meta['tokens']} tokens, depth {meta['depth']}: answer {prompt['answer']} in key "
          f"block(s) {blocks} of {(meta['tokens'] + BLOCK - 1) // BLOCK}; ProxyAttn {options}")
    print("layer | heads reading the needle (mass >= %.2f) | kept by ProxyAttn | kept by XAttention-style | "
          "needle mass kept: ProxyAttn / XAttention | density" % args.min_mass)
    totals = [0.0, 0.0, 0.0]
    for layer in range(24):
        path = S.layer_file(args.capture_dir, layer)
        if not os.path.exists(path):
            break
        x = S.load_layer(args.capture_dir, layer)
        q, k, scale = x["q"], x["k"], x["scale"]
        n, hq, _ = q.shape
        nb = (n + BLOCK - 1) // BLOCK
        # [Hq]: mean over the question block's rows of the dense probability on the needle.
        W, _ = S.cached_block_mass(args.capture_dir, layer, q, k, scale)
        mass = (W[:, nb - 1, blocks].sum(-1) / (n - (nb - 1) * BLOCK)).float()
        mask, stats = proxyattn.estimate(q, k, scale, return_stats=True, **options)
        pa = torch.from_numpy(mask.to_dense()[:, nb - 1, blocks].all(-1))
        xa_mask = match_density("xattention", stats["total_density"], q, k, block_size=BLOCK, steps=24).mask
        xa = torch.tensor([bool(xa_mask[h, nb - 1, blocks].all()) for h in range(hq)])
        readers = mass >= args.min_mass
        kept_pa = (mass * pa).sum().item() / max(mass.sum().item(), 1e-12)
        kept_xa = (mass * xa).sum().item() / max(mass.sum().item(), 1e-12)
        totals[0] += mass.sum().item()
        totals[1] += (mass * pa).sum().item()
        totals[2] += (mass * xa).sum().item()
        who = ",".join(str(h) for h in range(hq) if readers[h]) or "-"
        print(f"{layer:5d} | {int(readers.sum()):2d} ({who}) | {int((readers & pa).sum()):2d} | "
              f"{int((readers & xa).sum()):2d} | {kept_pa:.2f} / {kept_xa:.2f} | {stats['total_density']:.3f}")
    print(f"all layers: share of the question's needle mass in kept blocks: ProxyAttn "
          f"{totals[1] / totals[0]:.3f}, XAttention-style {totals[2] / totals[0]:.3f}")


if __name__ == "__main__":
    main()
