"""attn_implementation="proxyattn" in transformers: tiny random Llama, Qwen2, Mistral and
Qwen3-Next (hybrid) models generate the same tokens as sdpa (the prompt is long enough to go
through ProxyAttn, short enough that every block is kept), the prefill goes to ProxyAttn and
decoding to sdpa; gpt-oss (attention sinks) and Gemma 2 (logit soft-capping) give their eager
attention's answers."""
import copy

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")
import proxyattn.transformers as pt  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def tiny(kind, head_dim=16):
    common = dict(vocab_size=500, hidden_size=8 * head_dim, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=2048)
    if kind == "llama":
        return transformers.LlamaConfig(**common)
    if kind == "qwen2":
        return transformers.Qwen2Config(**common)
    if kind == "gpt_oss":  # one full-attention layer (ProxyAttn + sinks), one sliding (eager)
        common["max_position_embeddings"] = 131072  # what its default YaRN scaling expects
        return transformers.GptOssConfig(**common, head_dim=head_dim, num_local_experts=4, num_experts_per_tok=2,
                                         sliding_window=128, layer_types=["full_attention", "sliding_attention"])
    if kind == "qwen3_next":  # a hybrid: a linear-attention layer (its own), a full one (ProxyAttn)
        return transformers.Qwen3NextConfig(**common, head_dim=head_dim, layer_types=["linear_attention", "full_attention"],
                                            num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
                                            shared_expert_intermediate_size=64, linear_num_key_heads=2,
                                            linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16)
    if kind == "gemma2":  # a cap that binds at the tiny model's scores (Gemma 2's own is 50)
        return transformers.Gemma2Config(**common, head_dim=head_dim, attn_logit_softcapping=0.05)
    return transformers.MistralConfig(**common, sliding_window=4096)


def models(kind, dtype, device, head_dim=16, reference="sdpa"):
    torch.manual_seed(0)
    config = tiny(kind, head_dim)
    dense = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation=reference)
    sparse = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="proxyattn")
    sparse.load_state_dict(dense.state_dict())
    return dense.to(device, dtype).eval(), sparse.to(device, dtype).eval()


@pytest.fixture(autouse=True)
def registered():
    pt.register(min_prefill_tokens=256)
    pt.reset_call_counts()
    yield
    pt.register()


@pytest.mark.parametrize("kind,attention_layers", [("llama", 2), ("qwen2", 2), ("mistral", 2), ("qwen3_next", 1)])
def test_same_tokens_as_sdpa_on_cpu(kind, attention_layers):
    dense, sparse = models(kind, torch.float32, "cpu")
    ids = torch.randint(0, 500, (1, 300), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = dense.generate(ids, max_new_tokens=12, do_sample=False)
        got = sparse.generate(ids, max_new_tokens=12, do_sample=False)
    assert torch.equal(want, got)
    counts = pt.call_counts()
    assert counts["proxyattn"] == attention_layers, counts      # the prefill of each attention layer
    assert counts["dense"] == attention_layers * 11, counts     # every decoding step


COMPILE_CASES = [("cpu", torch.float32, 16, 1e-5),
                 pytest.param("cuda", torch.bfloat16, 64, 2e-2, marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU"))]


@pytest.mark.parametrize("device,dtype,head_dim,tol", COMPILE_CASES)
def test_torch_compile_keeps_the_prefill_on_proxyattn(device, dtype, head_dim, tol):
    """Under torch.compile (fullgraph) transformers' sdpa mask function builds a dense mask even for
    a plain causal prompt; the integration's mask function must still leave it out, so that the
    compiled model's prefill runs ProxyAttn, with the logits of eager sdpa."""
    pytest.importorskip("torch._inductor", reason="torch.compile's inductor is not available")
    dense, sparse = models("llama", dtype, device, head_dim)
    ids = torch.randint(0, 500, (1, 300), generator=torch.Generator().manual_seed(1)).to(device)
    compiled = torch.compile(sparse, fullgraph=True)
    with torch.no_grad():
        want = dense(ids).logits
        got = compiled(ids).logits
    assert pt.call_counts() == {"proxyattn": 2, "dense": 0}
    want, got = want.float(), got.float()
    assert ((got - want).norm() / want.norm()).item() < tol
    # A padding mask cannot be read while tracing: that prefill goes to sdpa, with sdpa's logits.
    mask = torch.ones_like(ids)
    mask[0, :10] = 0
    with torch.no_grad():
        want = dense(ids, attention_mask=mask).logits.float()
        got = compiled(ids, attention_mask=mask).logits.float()
    assert pt.call_counts() == {"proxyattn": 2, "dense": 2}
    assert ((got - want)[:, 10:].norm() / want[:, 10:].norm()).item() < tol


def test_short_prompts_and_padding_stay_dense():
    dense, sparse = models("llama", torch.float32, "cpu")
    ids = torch.randint(0, 500, (2, 300), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :10] = 0  # left padding: not a plain causal prompt
    with torch.no_grad():
        want = dense(ids[:, :100]).logits
        got = sparse(ids[:, :100]).logits
        assert torch.allclose(want, got) and pt.call_counts()["proxyattn"] == 0
        want = dense(ids, attention_mask=mask).logits
        got = sparse(ids, attention_mask=mask).logits
    assert torch.allclose(want, got, atol=1e-5) and pt.call_counts()["proxyattn"] == 0


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU: the CUDA transformers test skips")
def test_prefill_logits_close_to_sdpa_on_cuda():
    dense, sparse = models("llama", torch.bfloat16, "cuda", head_dim=64)  # a head dim the GPU kernel takes
    ids = torch.randint(0, 500, (2, 1000), generator=torch.Generator().manual_seed(3)).cuda()
    with torch.no_grad():
        want = dense(ids).logits.float()
        got = sparse(ids).logits.float()
    assert pt.call_counts()["proxyattn"] == 2
    assert ((got - want).norm() / want.norm()).item() < 2e-2


def test_register_rejects_unknown_options():
    with pytest.raises(TypeError, match="gama"):
        pt.register(gama=0.9)
    with pytest.raises(ValueError, match="min_prefill_tokens"):
        pt.register(min_prefill_tokens=0)


LATER_TURN_CASES = [("llama", "cpu", torch.float32), ("qwen2", "cpu", torch.float32),
                    pytest.param("llama", "cuda", torch.bfloat16, marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU")),
                    pytest.param("qwen2", "cuda", torch.bfloat16, marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU"))]


def two_turns(model, dtype_device):
    """Turn 1 fills a DynamicCache; turn 2 appends 300 new tokens to it and generates 8."""
    device = dtype_device
    first = torch.randint(0, 500, (1, 280), generator=torch.Generator().manual_seed(3)).to(device)
    second = torch.randint(0, 500, (1, 300), generator=torch.Generator().manual_seed(4)).to(device)
    cache = transformers.DynamicCache(config=model.config)
    with torch.no_grad():
        turn1 = model.generate(first, max_new_tokens=5, do_sample=False, past_key_values=cache,
                               return_dict_in_generate=True)
        ids = torch.cat([turn1.sequences, second], dim=1)
        pt.reset_call_counts()
        return model.generate(ids, max_new_tokens=8, do_sample=False, past_key_values=turn1.past_key_values)


@pytest.mark.parametrize("kind,device,dtype", LATER_TURN_CASES)
def test_a_later_turn_after_a_cache_runs_proxyattn_and_matches_sdpa(kind, device, dtype):
    # The second turn's prefill goes to ProxyAttn with the new queries against every cached key
    # (gamma 1: every block kept) and generates sdpa's tokens.
    pt.register(min_prefill_tokens=256, gamma=1.0)
    dense, sparse = models(kind, dtype, device, head_dim=64 if device == "cuda" else 16)
    want = two_turns(dense, device)
    got = two_turns(sparse, device)
    assert torch.equal(want, got)
    counts = pt.call_counts()
    assert counts["proxyattn"] == 2, counts  # the second turn's prefill, in each of the 2 layers
    assert counts["dense"] == 2 * 7, counts  # its decoding steps


def later_turn_logits(model):
    """The logits of a 300-token prefill after a 280-token one, in one DynamicCache."""
    first = torch.randint(0, 500, (1, 280), generator=torch.Generator().manual_seed(3))
    second = torch.randint(0, 500, (1, 300), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        cache = model(first, use_cache=True).past_key_values
        pt.reset_call_counts()
        return model(second, past_key_values=cache, use_cache=True).logits


@pytest.mark.parametrize("kind,reference,proxyattn_calls", [
    ("llama", "sdpa", 2), ("mistral", "sdpa", 2), ("qwen3_next", "sdpa", 1),
    ("gpt_oss", "eager", 1),  # a full layer (ProxyAttn, sinks) and a sliding one: two masks
    ("gemma2", "eager", 0)])  # sliding and full layers, every call to eager (softcap)
def test_a_later_turns_prefill_gives_the_reference_logits(kind, reference, proxyattn_calls):
    # Logits, not only tokens: a tiny random model's greedy tokens hide large errors.
    pt.register(min_prefill_tokens=256, gamma=1.0)
    dense, sparse = models(kind, torch.float32, "cpu", reference=reference)
    want = later_turn_logits(dense)
    got = later_turn_logits(sparse)
    assert ((got - want).norm() / want.norm()).item() < 1e-5
    assert pt.call_counts()["proxyattn"] == proxyattn_calls, pt.call_counts()


def test_a_model_that_builds_its_own_mask_is_refused_after_a_cache():
    # Doge derives a dynamic mask from transformers' one; after a cache the integration gives it
    # none (causality is applied in the attention function), so Doge's mask would let queries see
    # later keys (15% off sdpa's logits in a tiny model): refused with an error naming sdpa.
    pt.register(min_prefill_tokens=256, gamma=1.0)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.DogeConfig(vocab_size=500, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                num_attention_heads=8, num_key_value_heads=2),
        attn_implementation="proxyattn").eval()
    with pytest.raises(NotImplementedError, match="DogeAttention.*sdpa"):
        later_turn_logits(model)


@pytest.mark.parametrize("kind", ["gpt_oss", "gemma2"])
def test_sinks_and_softcap_give_the_models_eager_answers(kind):
    # gpt-oss: its full-attention layer's prefill runs ProxyAttn with the sinks applied through the
    # lse; its sliding layer's prefill (a window mask) and every decoding step run its eager
    # attention (sdpa has no sinks). Gemma 2: every call runs eager (the kernels have no softcap).
    pt.register(min_prefill_tokens=256, gamma=1.0)
    dense, sparse = models(kind, torch.float32, "cpu", reference="eager")
    ids = torch.randint(0, 500, (1, 300), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = dense(ids).logits
        got = sparse(ids).logits
    assert ((got - want).norm() / want.norm()).item() < 1e-5
    assert pt.call_counts() == ({"proxyattn": 1, "dense": 1} if kind == "gpt_oss" else {"proxyattn": 0, "dense": 2})
    with torch.no_grad():
        assert torch.equal(dense.generate(ids, max_new_tokens=8, do_sample=False),
                           sparse.generate(ids, max_new_tokens=8, do_sample=False))
    if kind == "gpt_oss":  # a later turn: the new queries bottom-right against the cache, sinks too
        assert torch.equal(two_turns(dense, "cpu"), two_turns(sparse, "cpu"))
        assert pt.call_counts()["proxyattn"] == 1


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU: the CUDA transformers test skips")
def test_a_later_turn_the_gpu_kernels_do_not_take_goes_to_sdpa_bottom_right():
    # float32 on CUDA: the kernels do not take it, so the second turn's prefill goes to sdpa, with
    # the bottom-right causal mask that the skipped mask function did not build.
    pt.register(min_prefill_tokens=256, gamma=1.0)
    dense, sparse = models("llama", torch.float32, "cuda", head_dim=64)
    assert torch.equal(two_turns(dense, "cuda"), two_turns(sparse, "cuda"))
    assert pt.call_counts()["proxyattn"] == 0


def eager_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The eager attention of this 'modeling file' (IndexedAttention's): records what it was given."""
    module.eager_calls.append((attention_mask, sorted(name for name, x in kwargs.items() if x is not None)))
    return torch.zeros(query.shape[0], query.shape[2], query.shape[1], value.shape[-1]), None


class IndexedAttention(torch.nn.Module):
    """A module whose model passes its own sparse selection (indices), as DeepSeek-V3.2's does."""
    is_causal, layer_idx = True, 0

    def __init__(self):
        super().__init__()
        self.eager_calls = []


def test_a_models_own_selection_goes_to_its_eager_attention_and_mla_values_to_sdpa():
    module = IndexedAttention()
    q, k = torch.randn(1, 4, 300, 16), torch.randn(1, 2, 300, 16)
    indices = torch.zeros(1, 300, 8, dtype=torch.int64)
    pt.proxyattn_attention_forward(module, q, k, k, None, scaling=0.25, indices=indices)
    assert pt.call_counts() == {"proxyattn": 0, "dense": 1}
    (mask, given), = module.eager_calls
    assert given == ["indices"]
    assert mask.dtype == q.dtype and mask.shape == (1, 1, 300, 300)  # the causal mask, additive
    future = torch.ones(300, 300, dtype=torch.bool).triu(1)
    assert (mask[0, 0][future] < -1e30).all() and (mask[0, 0][~future] == 0).all()
    # Values of another head dim (multi-head latent attention) go to sdpa, which takes them.
    module.num_key_value_groups = 2  # (sdpa repeats the kv heads by it where it needs to)
    out, _ = pt.proxyattn_attention_forward(module, q, k, torch.randn(1, 2, 300, 8), None, scaling=0.25)
    assert out.shape == (1, 300, 4, 8) and pt.call_counts()["dense"] == 2 and len(module.eager_calls) == 1


def test_a_model_that_runs_only_eager_attention_is_refused():
    # DeepSeek-V4 supports neither sdpa nor flash attention and appends to eager's mask: the
    # integration's sdpa-style mask would change its answers, so the first call says so.
    pytest.importorskip("transformers.models.deepseek_v4", reason="this transformers has no DeepSeek-V4")
    config = transformers.AutoConfig.for_model("deepseek_v4", vocab_size=500, hidden_size=128, num_hidden_layers=2,
                                               num_attention_heads=8, num_key_value_heads=2, head_dim=16)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="proxyattn").eval()
    with torch.no_grad(), pytest.raises(NotImplementedError, match="DeepseekV4.*s model supports only"):
        model(torch.randint(0, 500, (1, 300)))
