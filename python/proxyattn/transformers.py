"""attn_implementation="proxyattn" for Hugging Face transformers models (Llama, Qwen2, Mistral and
other decoder models whose attention modules call the attention interface with RoPE applied).

    import proxyattn.transformers
    proxyattn.transformers.register(gamma=0.95, min_prefill_tokens=8192)
    model = AutoModelForCausalLM.from_pretrained(..., attn_implementation="proxyattn")

ProxyAttn runs on the prefill of a long prompt: a forward of at least `min_prefill_tokens`
queries that are the whole causal context, with no padding or other mask, no sliding window
shorter than the keys, no dropout and no attention weights requested. That includes a prefill
after a cache (a later turn of a chat, a chunk of a long prompt, with transformers' DynamicCache):
the new queries attend to every cached key, causal at their own positions. Everything else
(decoding steps, short prompts, padded batches) goes to transformers' own sdpa attention,
unchanged, so generation after the prefill is dense. Below 8K tokens the estimation and the kept
set are close to dense anyway. After a cache the mask function gives no mask (causality is
applied here), so a model that builds its own mask from transformers' one (Doge) is refused there.

Attention sinks (gpt-oss: a learned logit per head in every softmax's denominator, passed as
s_aux) are applied to ProxyAttn's output through its log-sum-exp: out * sigmoid(lse - sink).
Logit soft-capping (Gemma 2's softcap) and a model's own sparse selection (indices, block_indices
of DeepSeek-V3.2-style indexers), which the kernels do not implement, send the call to the
model's own eager attention instead (exact, with eager's memory: transformers' sdpa would drop
them), and so do the dense calls of a model with sinks (sdpa has none).

torch.compile(model), fullgraph too, keeps the prefill on ProxyAttn (the mask function leaves the
plain causal mask out while tracing, where transformers' sdpa one would build it densely). A
padding mask given to a compiled model, even all ones, cannot be read while tracing: that prefill
goes to sdpa, so give none with an unpadded prompt.

Per-layer settings: register(layers={0: "dense", 5: {"gamma": 0.99}}) runs layer 0 dense and
layer 5 with its own options over the shared ones; a callable layer_index -> "dense" | dict |
None works as well.
"""
import sys

import torch

from . import torch_ops

NAME = "proxyattn"
DEFAULT_MIN_PREFILL_TOKENS = 8192

_settings = {"min_prefill_tokens": DEFAULT_MIN_PREFILL_TOKENS, "options": {}, "layers": None}
# The last mask request of a forward: (q_length, kv_length) when it was a plain causal prefill
# after a cache, whose keys are the cached ones then the new ones (the mask function then builds
# no mask; see _mask).
_chunk = {"shape": None}
# Arguments that change the attention's result and that only the model's eager attention
# implements (s_aux: ProxyAttn applies sinks itself where it runs, see attention_function).
_EAGER_ONLY = ("softcap", "s_aux", "indices", "block_indices")
_counts = {"proxyattn": 0, "dense": 0}


def _sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    return sdpa_attention_forward


def _causal(n, n_kv, offset, device):
    """A boolean causal mask [1, 1, n, n_kv], query i seeing keys up to i + offset."""
    return torch.ones(n, n_kv, dtype=torch.bool, device=device).tril(offset)[None, None]


def _eager(module, query, key, value, attention_mask, dropout, scaling, kwargs):
    """The model's own eager attention (eager_attention_forward of the module's modeling file),
    which implements what sdpa and ProxyAttn do not (_EAGER_ONLY). It adds its mask to the
    scores, so transformers' boolean sdpa mask (or its absence: causal, bottom-right after a
    cache, as forward() runs it) becomes an additive one here."""
    eager = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if eager is None:
        given = [name for name in _EAGER_ONLY if kwargs.get(name) is not None]
        raise NotImplementedError(f"proxyattn: {type(module).__name__} passes {given}, which only its eager attention "
                                  f"implements, and its modeling file has no eager_attention_forward")
    n, n_kv = query.shape[2], key.shape[2]
    if attention_mask is None and n > 1:  # one query (a decoding step) sees every key
        # bottom-right after a cache, else a static cache's prefill: top-left, as sdpa
        attention_mask = _causal(n, n_kv, n_kv - n if _is_chunk(n, n_kv) else 0, query.device)
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        blocked = torch.finfo(query.dtype).min
        attention_mask = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device).masked_fill(
            ~attention_mask, blocked)
    return eager(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


_eager_only_cache = {}


def _eager_only(modeling_module):
    """Whether the models of a modeling file (its PreTrainedModel classes) support no attention
    but eager: such a model may compute attention itself on eager's materialised mask (BLOOM's
    ALiBi) or add to it (DeepSeek-V4's compressed keys), which this integration's sdpa-style mask
    (None for a plain causal prompt) would silently change. Found in an eager call: while
    torch.compile traces (where the import below cannot run), a file not seen before counts as
    one whose models support sdpa."""
    if torch.compiler.is_compiling():
        return _eager_only_cache.get(modeling_module, False)
    if modeling_module not in _eager_only_cache:
        from transformers import PreTrainedModel
        mod = sys.modules.get(modeling_module)
        models = [c for c in vars(mod).values() if isinstance(c, type) and issubclass(c, PreTrainedModel)
                  and c.__module__ == modeling_module] if mod is not None else []
        _eager_only_cache[modeling_module] = bool(models) and not any(
            c._supports_sdpa or c._supports_flash_attn or c._supports_flex_attn for c in models)
    return _eager_only_cache[modeling_module]


def _refuse_eager_only(modeling_module, what):
    if _eager_only(modeling_module):
        raise NotImplementedError(
            f"proxyattn: {what} supports only transformers' eager attention (neither sdpa nor flash attention), "
            f"whose full mask it may rely on: load it with attn_implementation=\"eager\"")


def _with_sinks(out, lse, sinks):
    """One sequence's output [n, h, d] with each head's sink logit added to its softmax's
    denominator: the weights exp(s - lse) become exp(s) / (exp(lse) + exp(sink))."""
    keep = torch.sigmoid(lse.float() - sinks.float()[:, None])  # [h, n]
    return (out.float() * keep.t()[:, :, None]).to(out.dtype)


def _mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None, attention_mask=None,
          local_size=None, device="cpu", **kwargs):
    """transformers' sdpa mask, except for a long plain causal prefill after a cache (keys: the
    q_offset cached ones, then the new ones): no mask, and the attention function runs it
    bottom-right aligned, as ProxyAttn's queries-fewer-than-keys mode does (or, where it hands the
    call to sdpa, with the bottom-right causal mask it then builds)."""
    from transformers.masking_utils import causal_mask_function, sdpa_mask
    config = kwargs.get("config")
    if config is not None:  # (a model that computes attention itself asks only for the mask)
        _refuse_eager_only(type(config).__module__.replace(".configuration_", ".modeling_"),
                           f"{type(config).__name__}'s model")
    # Plain causal: transformers' causal mask function, or its sliding-window or chunked one (a
    # local_size it may skip) where the window covers every key; "may skip" means no other mask
    # function was combined with it.
    causal = kwargs.get("allow_is_causal_skip", True) and (
        (local_size is None and (mask_function is None or mask_function is causal_mask_function))
        or (local_size is not None and local_size >= q_offset + q_length))
    if causal:  # (a model's sliding layers whose window binds ask for their mask apart)
        _chunk["shape"] = None
    if causal and attention_mask is None and q_offset == 0 and kv_offset == 0:
        # A plain causal prompt into an empty cache: no mask, as sdpa_mask decides in eager. Under
        # torch.compile sdpa_mask would build the dense [q, kv] mask instead (it never skips while
        # tracing), and the attention function would then send the prefill to sdpa.
        return None
    if (causal and q_offset > 0 and kv_offset == 0 and kv_length == q_offset + q_length
            and q_length >= max(2, _settings["min_prefill_tokens"]) and not torch.compiler.is_compiling()
            and (attention_mask is None or bool(attention_mask[:, :kv_length].all()))):
        _chunk["shape"] = (q_length, kv_length)
        return None
    args = dict(q_offset=q_offset, kv_offset=kv_offset, attention_mask=attention_mask, local_size=local_size,
                device=device, **kwargs)
    if mask_function is not None:
        args["mask_function"] = mask_function
    return sdpa_mask(batch_size, q_length, kv_length, **args)


def _is_chunk(q_len, kv_len):
    return kv_len > q_len and _chunk["shape"] == (q_len, kv_len)


def _refuse_a_mask_made_from_none(module, mask, n, n_kv):
    """After a cache, _mask gives no mask where sdpa's would be the bottom-right causal one, and
    the attention function applies causality itself. A model that builds a mask of its own from
    transformers' one (Doge's dynamic mask) would build it without causality: such a mask, which
    lets a query see keys after it, is refused rather than computed with."""
    if not isinstance(mask, torch.Tensor) or not _is_chunk(n, n_kv):
        return
    future = ~_causal(n, n_kv, n_kv - n, mask.device)[0, 0]
    blocked = ~mask if mask.dtype == torch.bool else mask <= torch.finfo(mask.dtype).min / 2
    if not bool(blocked[..., -n:, -n_kv:][..., future].all()):
        raise NotImplementedError(
            f"proxyattn: {type(module).__name__} built its own attention mask for a prefill after a cache from "
            f"transformers' mask, which proxyattn leaves out there: load the model with attn_implementation=\"sdpa\"")


def _use_proxyattn(module, query, key, value, attention_mask, dropout, kwargs, sinks_ok):
    q_len, kv_len = query.shape[2], key.shape[2]
    if any(kwargs.get(name) is not None for name in _EAGER_ONLY if not (name == "s_aux" and sinks_ok)):
        return False
    if value.shape[-1] != query.shape[-1]:
        return False  # values of another head dim (MLA): the kernels take one
    if q_len < max(2, _settings["min_prefill_tokens"]) or attention_mask is not None:
        return False  # a decoding step (q_len 1), a short prompt, or a padding/window mask
    if kv_len < q_len or dropout > 0.0 or kwargs.get("output_attentions") or kwargs.get("position_bias") is not None:
        return False
    if kwargs.get("is_causal", getattr(module, "is_causal", True)) is False:
        return False
    window = kwargs.get("sliding_window", getattr(module, "sliding_window", None))
    if window is not None and window < kv_len:
        return False
    if query.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return False
    if query.is_cuda and (query.dtype == torch.float32 or query.shape[-1] not in (64, 128, 256)):
        return False  # what the CUDA kernels do not take runs dense rather than failing
    # With no mask and several queries, kv_len > q_len happens for a prefill after a cache that
    # _mask let through, and otherwise only for the prefill of an empty static cache
    # (transformers' sdpa relies on the same fact and crops the keys).
    return True


def attention_function(sequence_attention, returns_lse=False):
    """An attention-interface function built on `sequence_attention(q, k, v, scale, layer) -> out`
    (or `(out, lse)` with returns_lse, lse [heads, n], which lets it serve models with sinks),
    which gets one sequence's [n, heads, d] views (RoPE applied) of every prefill ProxyAttn can
    take (see the module's docstring) and the layer's index (None where the module has none);
    every other call goes to transformers' sdpa (or the model's eager attention, see above).
    Benchmarks and evaluations use it to run other kernels or masks in the same places."""

    def forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        """query [b, hq, n, d], key and value [b, hkv, n_kv, d]; returns (attn_output
        [b, n, hq, d], None) as transformers' sdpa does."""
        _refuse_eager_only(type(module).__module__, f"{type(module).__name__}'s model")
        _refuse_a_mask_made_from_none(module, attention_mask, query.shape[2], key.shape[2])
        if not _use_proxyattn(module, query, key, value, attention_mask, dropout, kwargs, returns_lse):
            _counts["dense"] += 1
            if any(kwargs.get(name) is not None for name in _EAGER_ONLY):
                return _eager(module, query, key, value, attention_mask, dropout, scaling, kwargs)
            n, n_kv = query.shape[2], key.shape[2]
            if attention_mask is None and _is_chunk(n, n_kv):
                # _mask built no mask for this prefill after a cache (e.g. float32 on CUDA, which the
                # kernels do not take): sdpa needs the bottom-right causal one.
                attention_mask = _causal(n, n_kv, n_kv - n, query.device)
            return _sdpa()(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        _counts["proxyattn"] += 1
        n = query.shape[2]
        keys = key.shape[2] if _is_chunk(n, key.shape[2]) else n  # after a cache: all; else crop
        q = query.transpose(1, 2)  # views: [b, n, h, d] with token stride d and head stride n * d
        k = key[:, :, :keys].transpose(1, 2)
        v = value[:, :, :keys].transpose(1, 2)
        layer = getattr(module, "layer_idx", None)
        sinks = kwargs.get("s_aux")

        def one(b):
            if not returns_lse:
                return sequence_attention(q[b], k[b], v[b], scaling, layer)
            out, lse = sequence_attention(q[b], k[b], v[b], scaling, layer)
            return out if sinks is None else _with_sinks(out, lse, sinks)

        # One sequence per call: [b, n, h, d] views of this layout do not flatten into a batch.
        # A single sequence's output is returned as a view, not stacked (a copy of the whole output).
        if q.shape[0] == 1:
            return one(0)[None], None
        return torch.stack([one(b) for b in range(q.shape[0])]), None

    return forward


def _layer_options(layer):
    """The options of one layer: None for dense, else a dict."""
    layers, shared = _settings["layers"], _settings["options"]
    own = None
    if callable(layers):
        own = layers(layer)
    elif layers is not None and layer in layers:
        own = layers[layer]
    if own == "dense":
        return None
    return {**shared, **(own or {})}


def _default_attention(q, k, v, scale, layer):
    """(out, lse) of one sequence."""
    options = _layer_options(layer)
    if options is None:
        return torch_ops.dense_attention(q, k, v, scale)
    return torch_ops.attention(q, k, v, scale, **options)


proxyattn_attention_forward = attention_function(_default_attention, returns_lse=True)


def register(min_prefill_tokens=DEFAULT_MIN_PREFILL_TOKENS, layers=None, **options):
    """Registers attn_implementation="proxyattn" (attention and mask functions). `options` are
    ProxyAttn's options (proxyattn.Options fields, or preset="paper" with overrides); `layers`
    maps a layer index to "dense" or to that layer's own options (see the module's docstring).
    Calling register again changes them for every model."""
    from transformers import AttentionInterface, AttentionMaskInterface

    from . import _api

    if min_prefill_tokens < 1:
        raise ValueError(f"min_prefill_tokens must be >= 1, got {min_prefill_tokens}")
    _api._options(options, 1)  # unknown names or bad types fail here, not in the first prefill
    if layers is not None and not callable(layers):
        if not isinstance(layers, dict):
            raise TypeError(f"layers must be a dict or a callable, got {type(layers).__name__}")
        for i, o in layers.items():
            if o != "dense" and not isinstance(o, dict):
                raise TypeError(f"layers[{i}] must be 'dense' or a dict of options, got {o!r}")
            if isinstance(o, dict):
                _api._options({**options, **o}, 1)
    _settings["min_prefill_tokens"] = int(min_prefill_tokens)
    _settings["options"] = dict(options)
    _settings["layers"] = layers
    AttentionInterface.register(NAME, proxyattn_attention_forward)
    # sdpa's mask function returns None for a plain causal prompt, which is what lets the
    # attention function recognise the prefill it can take; _mask adds a prefill after a cache.
    AttentionMaskInterface.register(NAME, _mask)


def call_counts():
    """How many attention calls went to ProxyAttn and to dense sdpa since the last reset."""
    return dict(_counts)


def reset_call_counts():
    _counts.update(proxyattn=0, dense=0)
