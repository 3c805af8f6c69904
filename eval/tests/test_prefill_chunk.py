"""run_eval's chunked prefill (prefill_chunk=N): a tiny random Llama generates the same tokens
prefilled in chunks as in one forward, dense and through ProxyAttn at gamma 1 (every block kept),
whose chunks after the first run in its queries-fewer-than-keys mode."""
import copy
import os
import sys

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import run_eval  # noqa: E402
import proxyattn.transformers as pat  # noqa: E402


def test_chunked_prefill_generates_the_one_forward_tokens():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    model = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="sdpa").eval()
    ids = torch.randint(0, 300, (2, 700), generator=torch.Generator().manual_seed(1))
    pat.register(min_prefill_tokens=2, gamma=1.0)
    calls = []
    transformers.AttentionInterface.register(
        "pa_eval", pat.attention_function(lambda q, k, v, s, layer: calls.append((q.shape[0], k.shape[0])) or
                                          pat._default_attention(q, k, v, s, layer)[0]))
    transformers.AttentionMaskInterface.register("pa_eval", pat._mask)
    try:
        with torch.no_grad():
            want = run_eval.generate(model, ids, run_eval.Method("dense"), max_new_tokens=6)
            got = run_eval.generate(model, ids, run_eval.Method("dense:prefill_chunk=256"), max_new_tokens=6)
            assert torch.equal(want, got)
            model.set_attn_implementation("pa_eval")
            got = run_eval.generate(model, ids, run_eval.Method("pa:prefill_chunk=256"), max_new_tokens=6)
            assert torch.equal(want, got)
    finally:
        pat.register()
    # per layer and sequence: chunks of 256, 256 and 188 queries against 256, 512 and 700 keys
    assert sorted(set(calls)) == [(188, 700), (256, 256), (256, 512)], sorted(set(calls))
    with pytest.raises(ValueError, match="dense takes only prefill_chunk"):
        run_eval.Method("dense:gamma=0.9")
