"""attn_implementation="proxyattn" across transformers' causal language models: each architecture
as a tiny random model (one layer of each of its kinds, 2 where it has one kind; 8 query and 2 kv
heads of 16, vocabulary 500; multimodal types as their text model), CPU, float32: a 300-token
prompt, then a second turn of 280 tokens after its cache (ProxyAttn from 256 tokens, gamma 1:
every block kept), the logits of both against the same weights under the reference attention
(sdpa where the model supports it, else eager; a second turn the reference cannot run is skipped).

    python3 bench/transformers_models.py --out models.jsonl          # every architecture, 2 at once
    python3 bench/transformers_models.py --models llama gpt_oss      # some

One line per architecture: "same" (relative logit error at most 1e-4 in both turns; with the
counts of calls that ran ProxyAttn, 0 for a model that does not call transformers' attention
interface), "differs", "refused" (the integration's clear error), "fails" (building or running
it with proxyattn raised another error: the reason), or "not built" (the generic tiny config
does not make a working reference model: the reason). Each runs in its own process (a timeout or
a crash stays there).
"""
import argparse
import concurrent.futures
import copy
import json
import subprocess
import sys

TINY = dict(vocab_size=500, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=8,
            num_key_value_heads=2, head_dim=16)
# Where a config has them: multi-head latent attention (DeepSeek-style; values of another head dim
# than the queries, as in the real models), partial rotary dims, and few small experts.
TINY_PARTS = dict(kv_lora_rank=32, q_lora_rank=48, qk_nope_head_dim=16, qk_rope_head_dim=8, qk_head_dim=24,
                  v_head_dim=16, rotary_dim=8, n_routed_experts=4, num_experts=4, num_local_experts=4,
                  num_experts_per_tok=2, moe_topk=2, n_group=1, topk_group=1, moe_intermediate_size=64,
                  shared_expert_intermediate_size=64, expert_ffn_hidden_size=64,
                  d_model=128, encoder_layers=2, decoder_layers=2, encoder_attention_heads=8,
                  decoder_attention_heads=8, encoder_ffn_dim=256, decoder_ffn_dim=256)
TOLERANCE = 1e-4


def shrink(config):
    """The config and its text config (multimodal models) cut to TINY and TINY_PARTS where they
    have the field; one layer of each kind in layer_types (a hybrid model keeps an attention
    layer; a model with sliding and full layers keeps both); token ids inside the vocabulary."""
    for c in {id(config): config, id(config.get_text_config()): config.get_text_config()}.values():
        parts = dict(TINY, **{k: v for k, v in TINY_PARTS.items() if hasattr(c, k)})
        if hasattr(c, "kv_lora_rank"):  # MLA: keys and values of every query head
            parts.update(head_dim=TINY_PARTS["qk_rope_head_dim"], num_key_value_heads=TINY["num_attention_heads"])
        if hasattr(c, "attn_layer_period"):  # Jamba-style hybrids: layer 1 of 2 attends
            parts.update(attn_layer_period=2, attn_layer_offset=1)
        try:
            if getattr(c, "per_layer_config", None):  # per-layer overrides: one shape for all
                c.per_layer_config = {}
        except AttributeError:
            pass
        kinds = getattr(c, "layer_types", None)
        if isinstance(kinds, list) and kinds:
            parts["layer_types"] = list(dict.fromkeys(kinds))
            if getattr(c, "num_kv_shared_layers", 0):  # Gemma 3n: the last layers reuse earlier caches
                parts["num_kv_shared_layers"] = len(parts["layer_types"])
                parts["layer_types"] *= 2
            parts["num_hidden_layers"] = len(parts["layer_types"])
        layers_before = getattr(c, "num_hidden_layers", None)
        for name, value in vars(c).items():  # other per-layer lists, cut to the new count
            if name not in parts and isinstance(value, list) and len(value) == layers_before:
                parts[name] = value[:parts["num_hidden_layers"]]
        for name, value in parts.items():
            try:
                if hasattr(c, name):
                    old = getattr(c, name)
                    if isinstance(old, list) and not isinstance(value, list):  # a value per layer
                        value = [value] * parts["num_hidden_layers"]
                    setattr(c, name, value)
            except (AttributeError, TypeError, ValueError):
                pass  # derived properties: the model's own fields decide
        for i, name in enumerate(("pad_token_id", "bos_token_id", "eos_token_id")):
            if isinstance(getattr(c, name, None), int) and getattr(c, name) >= TINY["vocab_size"]:
                setattr(c, name, i)


def reason(e):
    """An exception as one short line."""
    return " ".join(f"{type(e).__name__}: {e}".split())[:160]


def one(name):
    """The row of one architecture (runs in a child process)."""
    import warnings
    warnings.filterwarnings("ignore")
    import torch
    import transformers
    import proxyattn.transformers as pt
    transformers.logging.set_verbosity_error()
    pt.register(min_prefill_tokens=256, gamma=1.0)
    row = {"model": name}
    try:
        config = transformers.AutoConfig.for_model(name)
        shrink(config)
        model_class = transformers.AutoModelForCausalLM._model_mapping[type(config)]
        if model_class.config_class is type(config.get_text_config()):  # a multimodal type's text model
            config = config.get_text_config()
        row["reference"] = "sdpa" if model_class._supports_sdpa else "eager"
        torch.manual_seed(0)
        ref = model_class._from_config(copy.deepcopy(config),
                                                            attn_implementation=row["reference"]).eval()
        ids = torch.randint(3, TINY["vocab_size"] - 100, (1, 580), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            first = ref(ids[:, :300], use_cache=True)
            want = first.logits.float()
    except Exception as e:  # noqa: BLE001 (any failure to build or run the reference: not built)
        return {**row, "status": "not built", "why": reason(e)}
    try:  # a second turn of 280 tokens after the first's cache (the reference's, then ours)
        with torch.no_grad():
            want2 = ref(ids[:, 300:], past_key_values=first.past_key_values, use_cache=True).logits.float()
    except Exception as e:  # noqa: BLE001
        want2, row["turn2"] = None, "not run: " + reason(e)
    pt.reset_call_counts()
    try:
        ours = model_class._from_config(copy.deepcopy(config), attn_implementation="proxyattn")
        ours.load_state_dict(ref.state_dict())
        with torch.no_grad():
            first = ours.eval()(ids[:, :300], use_cache=want2 is not None)
            got = first.logits.float()
            counts = pt.call_counts()
            pt.reset_call_counts()
            if want2 is not None:
                got2 = ours(ids[:, 300:], past_key_values=first.past_key_values, use_cache=True).logits.float()
    except NotImplementedError as e:
        return {**row, "status": "refused", "why": reason(e)}
    except Exception as e:  # noqa: BLE001
        return {**row, "status": "fails", "why": reason(e)}
    err = ((got - want).norm() / want.norm()).item()
    row.update(error=err, proxyattn_calls=counts["proxyattn"], dense_calls=counts["dense"])
    if want2 is not None:
        row.update(turn2_error=((got2 - want2).norm() / want2.norm()).item(),
                   turn2_proxyattn_calls=pt.call_counts()["proxyattn"])
    worst = max(err, row.get("turn2_error", 0.0))
    return {**row, "status": "same" if worst <= TOLERANCE else "differs"}


def run_child(name, timeout):
    try:
        p = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, timeout=timeout)
        lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
        if lines:
            return json.loads(lines[-1])
        return {"model": name, "status": "not built", "why": f"exit {p.returncode}: {p.stderr.strip()[-160:]}"}
    except subprocess.TimeoutExpired:
        return {"model": name, "status": "not built", "why": f"over {timeout} s"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", help="model types (default: every causal LM of transformers)")
    ap.add_argument("--out", help="JSON lines, one per architecture")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=300, help="seconds per architecture")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one)), flush=True)
        return
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    names = args.models or sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda n: run_child(n, args.timeout), names))
    if args.out:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    for r in rows:
        detail = (f"error {r['error']:.1e} vs {r['reference']}, ProxyAttn calls {r['proxyattn_calls']}"
                  if "error" in r else r.get("why", ""))
        if "turn2_error" in r:
            detail += f"; turn 2 error {r['turn2_error']:.1e}, ProxyAttn calls {r['turn2_proxyattn_calls']}"
        elif "turn2" in r:
            detail += f"; turn 2 {r['turn2'][:60]}"
        print(f"{r['model']:28s} {r['status']:10s} {detail}")
    statuses = [r["status"] for r in rows]
    ran = sum(1 for r in rows if r["status"] == "same" and r["proxyattn_calls"] > 0)
    print(f"\n{len(rows)} architectures: " + ", ".join(f"{statuses.count(s)} {s}" for s in
                                                     ("same", "differs", "refused", "fails", "not built")) +
          f"; ProxyAttn ran in {ran} of the same")


if __name__ == "__main__":
    main()
