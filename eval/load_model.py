"""Loads the evaluation model from its GGUF file with transformers (no hub access).

transformers reads GGUF through the `gguf` package and dequantizes every tensor into the
requested dtype; it needs `accelerate` for that too. The tokenizer (and, for an instruct model,
its chat template) comes from the same file.

    from load_model import load
    model, tokenizer = load("/tmp/proxyattn_model", "bfloat16", "cuda")
    model, tokenizer = load("/tmp/proxyattn_model", "bfloat16", "cuda", yarn=4)  # 128K positions

yarn=F extends the context F times with YaRN, the rope scaling that the Qwen2.5 model cards
prescribe past 32,768 tokens ({"rope_type": "yarn", "factor": 4.0,
"original_max_position_embeddings": 32768}): the model's own positions become the original ones.
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


def load(model_dir, dtype="bfloat16", device="cpu", attn_implementation="sdpa", verbose=True, yarn=None):
    """Returns (model, tokenizer), the model in eval mode on `device` in `dtype`.

    The first load reads the GGUF file (the tokenizer's vocabulary is converted and every tensor
    dequantised: about a minute) and, where model_dir is writable, saves both in transformers'
    own format to model_dir/hf-<dtype>, which later loads read in seconds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # assemble_model.sh installs the gguf wheel into <model_dir>/site on the GPU machine.
    site = os.path.join(model_dir, "site")
    if os.path.isdir(site) and site not in sys.path:
        sys.path.append(site)
    name = dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")
    dtype = getattr(torch, name)
    cache = os.path.join(model_dir, "hf-" + name)
    t0 = time.time()
    if os.path.exists(os.path.join(cache, "done")):
        tokenizer = AutoTokenizer.from_pretrained(cache)
        t1 = time.time()
        model = AutoModelForCausalLM.from_pretrained(cache, dtype=dtype, attn_implementation=attn_implementation)
        source = cache
    else:
        gguf_file = find_gguf(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf_file)
        t1 = time.time()
        model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf_file, dtype=dtype,
                                                     attn_implementation=attn_implementation)
        source = gguf_file
        try:
            _keep(model, tokenizer, cache)
        except OSError as e:
            print("could not keep the converted model in %s: %s" % (cache, e), flush=True)
    if yarn:
        apply_yarn(model, yarn)
    model.to(device).eval()
    t2 = time.time()
    if verbose:
        c = model.config
        print("loaded %s: tokenizer %.1f s, model %.1f s; %d layers, %d q heads, %d kv heads, "
              "head dim %d, max positions %d, rope %s, %s on %s"
              % (source, t1 - t0, t2 - t1, c.num_hidden_layers, c.num_attention_heads,
                 c.num_key_value_heads, getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
                 c.max_position_embeddings, getattr(c, "rope_parameters", None), dtype, device),
              flush=True)
    return model, tokenizer


def compile_rest(model):
    """Compiles the model's non-attention elementwise work in place, as serving engines fuse it:
    each decoder layer's MLP and norms, the final norm and the modeling module's rotary function
    (torch.compile, inductor, dynamic shapes: one graph per module class serves every layer and
    every length). Attention stays outside the compiled parts, so every attention function runs as
    in eager (under compile, transformers' mask handling would build a dense mask for sdpa).
    The rotary function is replaced in its modeling module, so every model of that class in the
    process gets it. Returns how many modules and functions were compiled."""
    import torch

    torch._dynamo.config.recompile_limit = 64
    body = model.model
    count = 0
    for layer in body.layers:
        for name in ("mlp", "input_layernorm", "post_attention_layernorm"):
            getattr(layer, name).compile(dynamic=True)
            count += 1
    body.norm.compile(dynamic=True)
    count += 1
    modeling = sys.modules[type(body.layers[0]).__module__]
    if hasattr(modeling, "apply_rotary_pos_emb"):
        modeling.apply_rotary_pos_emb = torch.compile(modeling.apply_rotary_pos_emb, dynamic=True)
        count += 1
    return count


def apply_yarn(model, factor):
    """Static YaRN over the model's own context (the converted copy that _keep saved stays
    unscaled): the rotary embedding is rebuilt from the new rope parameters."""
    factor = float(factor)
    if not factor > 1:
        raise ValueError("yarn must be a factor above 1, got %r" % (factor,))
    config = model.config
    original = int(config.max_position_embeddings)
    theta = config.rope_parameters["rope_theta"]
    if config.rope_parameters.get("rope_type", "default") != "default":
        raise ValueError("the model already scales its rope: %s" % (config.rope_parameters,))
    config.rope_parameters = {"rope_type": "yarn", "rope_theta": theta, "factor": factor,
                              "original_max_position_embeddings": original}
    config.max_position_embeddings = int(original * factor)
    inner = model.get_decoder()
    old = inner.rotary_emb
    inner.rotary_emb = type(old)(config=config).to(old.inv_freq.device)


def _keep(model, tokenizer, cache):
    """Saves the dequantised model as plain safetensors (transformers refuses save_pretrained on
    a model loaded from GGUF): its config without the quantisation entry, and its tensors."""
    from safetensors.torch import save_model

    os.makedirs(cache, exist_ok=True)
    tokenizer.save_pretrained(cache)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    with open(os.path.join(cache, "config.json"), "w") as f:
        json.dump(config, f)
    save_model(model, os.path.join(cache, "model.safetensors"), metadata={"format": "pt"})
    open(os.path.join(cache, "done"), "w").close()


def max_context(model):
    return int(model.config.max_position_embeddings)
