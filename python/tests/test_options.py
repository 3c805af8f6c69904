"""The ProxyAttn options as Python sees them: defaults from the C++ Config, type checks that name
the option, the 'paper' preset, the head preferences (exact_last_block, head_columns), and the
transformers integration's per-layer settings. CPU only."""
import numpy as np
import pytest

import proxyattn


def qk(n=1000, hq=8, hkv=2, d=32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, h, d)).astype(np.float32) for h in (hq, hkv)]


def test_defaults_come_from_the_library():
    d = proxyattn.DEFAULTS
    assert d == {f: getattr(proxyattn.Options(), f) for f in d}
    assert d["exact_last_block"] is True and d["head_columns"] == 32 and d["proxy_groups"] == 0
    assert d["budget_mode"] == "last_row_count" and d["backend"] == "auto"


def test_options_are_checked_and_named():
    q, k = qk()
    with pytest.raises(TypeError, match="gamma"):
        proxyattn.estimate(q, k, gamma="high")
    with pytest.raises(TypeError, match="keep_sink"):
        proxyattn.estimate(q, k, keep_sink=2)
    with pytest.raises(TypeError, match="head_columns"):
        proxyattn.estimate(q, k, head_columns=2.5)
    with pytest.raises(ValueError, match="head_columns"):
        proxyattn.estimate(q, k, head_columns=65)
    with pytest.raises(ValueError, match="preset"):
        proxyattn.estimate(q, k, preset="fast")
    with pytest.raises(ValueError, match="budget_mode must be 'row_ratio', 'last_row_count' or 'row_mass'"):
        proxyattn.estimate(q, k, budget_mode="rows")


def test_last_block_gamma_changes_only_the_last_block():
    q, k = qk(n=1500)
    base = dict(gamma=0.6, min_budget_tokens=0, head_columns=2)
    plain = rows(proxyattn.estimate(q, k, last_block_gamma=0.0, **base))
    nb = max(m for m, _ in plain) + 1
    higher = rows(proxyattn.estimate(q, k, last_block_gamma=0.95, **base))
    assert all(higher[key] == plain[key] for key in plain if key[0] < nb - 1)
    assert all(len(higher[key]) >= len(plain[key]) for key in plain if key[0] == nb - 1)
    assert any(len(higher[key]) > len(plain[key]) for key in plain if key[0] == nb - 1)
    lower = rows(proxyattn.estimate(q, k, last_block_gamma=0.3, **base))  # below gamma: gamma holds
    assert lower == plain
    full = rows(proxyattn.estimate(q, k, last_block_gamma=1.0, **base))
    assert all(full[key] == tuple(range(nb)) for key in full if key[0] == nb - 1)
    with pytest.raises(ValueError, match="last_block_gamma must be in"):
        proxyattn.estimate(q, k, last_block_gamma=1.5)


def test_row_mass_counts_each_row_from_its_prefix():
    # The last row keeps k_h blocks as with last_row_count; earlier rows count the head's stage-2
    # masses on their own causal prefix, so they keep at most their length and differ somewhere.
    q, k = qk(n=1500)
    base = dict(gamma=0.8, min_budget_tokens=0, head_columns=0)
    per_row, s_row = proxyattn.estimate(q, k, budget_mode="row_mass", return_stats=True, **base)
    last, s_last = proxyattn.estimate(q, k, budget_mode="last_row_count", return_stats=True, **base)
    got, flat = rows(per_row), rows(last)
    nb = max(m for m, _ in got) + 1
    assert all(got[key] == flat[key] for key in got if key[0] == nb - 1)
    assert any(len(got[key]) != len(flat[key]) for key in got)
    assert all(len(v) <= m + 1 for (m, _), v in got.items())
    assert np.array_equal(s_row["budget_blocks"], s_last["budget_blocks"])
    ref = proxyattn.estimate(q, k, budget_mode="row_mass", backend="cpu_reference", **base)
    assert sum(got[key] == rows(ref)[key] for key in got) >= 0.95 * len(got)


def rows(mask):
    """{(query block, head): kept blocks} of a one-sequence BlockMask."""
    ro, ci = np.asarray(mask.row_offsets), np.asarray(mask.col_indices)
    return {divmod(r, mask.num_heads): tuple(ci[ro[r]:ro[r + 1]]) for r in range(len(ro) - 1)}


@pytest.mark.parametrize("hkv,groups", [(2, 2), (8, 1)])
def test_paper_preset_is_its_options(hkv, groups):
    q, k = qk(hq=8, hkv=hkv)
    got = proxyattn.estimate(q, k, preset="paper", min_budget_tokens=0)
    want = proxyattn.estimate(q, k, gamma=0.95, stride=4, proxy_groups=groups, min_budget_tokens=0,
                              keep_sink=False, budget_mode="last_row_count", exact_last_block=False, last_block_gamma=0.0,
                              head_columns=0)
    assert rows(got) == rows(want)
    assert rows(got) != rows(proxyattn.estimate(q, k, min_budget_tokens=0))


def test_head_preferences_change_only_what_they_say():
    q, k = qk(n=1500)
    base = dict(gamma=0.6, min_budget_tokens=0, exact_last_block=False, head_columns=0, last_block_gamma=0.0)
    plain = rows(proxyattn.estimate(q, k, **base))
    exact = rows(proxyattn.estimate(q, k, **{**base, "exact_last_block": True}))
    nb = max(m for m, _ in plain) + 1
    assert all(exact[key] == plain[key] for key in plain if key[0] < nb - 1)  # only the last block
    assert any(exact[key] != plain[key] for key in plain if key[0] == nb - 1)
    columns = rows(proxyattn.estimate(q, k, **{**base, "head_columns": 4}))
    assert any(columns[key] != plain[key] for key in plain)
    assert all(len(columns[key]) == len(plain[key]) for key in plain)  # the same budgets
    full = rows(proxyattn.estimate(q, k, gamma=1.0))
    assert all(v == tuple(range(m + 1)) for (m, _), v in full.items())


torch = pytest.importorskip("torch", reason="torch is not installed: the transformers cases skip")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")
import proxyattn.transformers as pt  # noqa: E402


def tiny_llama():
    pt.register()  # attn_implementation="proxyattn" must exist before the model is built
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=500, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=2048)
    dense = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    sparse = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="proxyattn").eval()
    sparse.load_state_dict(dense.state_dict())
    return dense, sparse


def test_per_layer_settings():
    dense, sparse = tiny_llama()
    ids = torch.randint(0, 500, (1, 600), generator=torch.Generator().manual_seed(1))
    try:
        with torch.no_grad():
            want = dense(ids).logits
            pt.register(min_prefill_tokens=256, gamma=0.1, min_budget_tokens=0, layers={0: "dense", 1: "dense"})
            assert torch.allclose(sparse(ids).logits, want, atol=1e-4)  # every layer dense
            pt.register(min_prefill_tokens=256, gamma=0.1, min_budget_tokens=0, layers=lambda i: "dense" if i else None)
            one = sparse(ids).logits
            pt.register(min_prefill_tokens=256, gamma=0.1, min_budget_tokens=0)
            both = sparse(ids).logits
            pt.register(min_prefill_tokens=256, gamma=0.1, min_budget_tokens=0, layers={1: {"gamma": 1.0}})
            assert torch.allclose(sparse(ids).logits, one, atol=1e-4)  # gamma 1 in layer 1 = dense there
        assert not torch.allclose(one, want, atol=1e-4) and not torch.allclose(one, both, atol=1e-4)
        with pytest.raises(TypeError, match="layers"):
            pt.register(layers=[0])
        with pytest.raises(TypeError, match=r"layers\[3\]"):
            pt.register(layers={3: "sparse"})
        with pytest.raises(TypeError, match="gama"):
            pt.register(layers={3: {"gama": 0.5}})
    finally:
        pt.register()
