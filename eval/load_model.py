"""Loads the evaluation model from its GGUF file with transformers (no hub access).

transformers reads GGUF through the `gguf` package and dequantizes every tensor into the
requested dtype; it needs `accelerate` for that too. The tokenizer (and, for an instruct model,
its chat template) comes from the same file.

    from load_model import load
    model, tokenizer = load("/tmp/proxyattn_model", "bfloat16", "cuda")
"""
import glob
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def find_gguf(model_dir):
    """The GGUF file of model_dir: the one named in manifest.json, else the only *.gguf."""
    manifest = os.path.join(model_dir, "manifest.json")
    if os.path.exists(manifest):
        with open(manifest) as f:
            name = json.load(f)["file"]
        if os.path.exists(os.path.join(model_dir, name)):
            return name
    found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(model_dir, "*.gguf")))
    if len(found) != 1:
        raise FileNotFoundError("expected one .gguf file in %s, found %s" % (model_dir, found))
    return found[0]


def load(model_dir, dtype="bfloat16", device="cpu", attn_implementation="sdpa", verbose=True):
    """Returns (model, tokenizer), the model in eval mode on `device` in `dtype`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # assemble_model.sh installs the gguf wheel into <model_dir>/site on the GPU machine.
    site = os.path.join(model_dir, "site")
    if os.path.isdir(site) and site not in sys.path:
        sys.path.append(site)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    gguf_file = find_gguf(model_dir)
    t0 = time.time()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf_file)
    t1 = time.time()
    model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf_file, dtype=dtype,
                                                 attn_implementation=attn_implementation)
    model.to(device).eval()
    t2 = time.time()
    if verbose:
        c = model.config
        print("loaded %s: tokenizer %.1f s, model %.1f s; %d layers, %d q heads, %d kv heads, "
              "head dim %d, max positions %d, rope %s, %s on %s"
              % (gguf_file, t1 - t0, t2 - t1, c.num_hidden_layers, c.num_attention_heads,
                 c.num_key_value_heads, getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
                 c.max_position_embeddings, getattr(c, "rope_parameters", None), dtype, device),
              flush=True)
    return model, tokenizer


def max_context(model):
    return int(model.config.max_position_embeddings)
