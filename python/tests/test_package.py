"""The proxyattn package (nanobind bindings) against the float64 reference, on the CPU with numpy,
torch and jax inputs, and on CUDA when a GPU is present (those cases skip, saying so, without one)."""
import numpy as np
import pytest

import reference
from reference import rel_err

import proxyattn  # the installed package: pip install . (scripts/test.sh does it)
try:
    import torch
except ImportError:  # the numpy cases still run
    torch = None
try:
    import jax
    import jax.numpy as jnp
except ImportError:
    jax = None

HAS_CUDA = torch is not None and torch.cuda.is_available() and proxyattn.cuda_available()
SPARSE = dict(gamma=0.3, min_budget_tokens=0)  # random inputs then drop blocks


def frameworks():
    cases = [pytest.param(("numpy", "cpu", "float32"), id="numpy-cpu")]
    if torch is not None:
        cases += [pytest.param(("torch", "cpu", "float32"), id="torch-cpu"),
                  pytest.param(("torch", "cpu", "bfloat16"), id="torch-cpu-bf16")]
    no_jax = pytest.mark.skipif(jax is None, reason="jax is not installed: the jax cases skip")
    cases += [pytest.param(("jax", "cpu", "float32"), id="jax-cpu", marks=no_jax),
              pytest.param(("jax", "cpu", "bfloat16"), id="jax-cpu-bf16", marks=no_jax)]
    gpu = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU (or a CPU-only build): CUDA cases skipped")
    cases += [pytest.param(("torch", "cuda", "bfloat16"), id="torch-cuda-bf16", marks=gpu),
              pytest.param(("torch", "cuda", "float16"), id="torch-cuda-fp16", marks=gpu)]
    return cases


def tolerance(dtype):
    return {"float32": 1e-5, "float16": 4e-3, "bfloat16": 2e-2}[dtype]


def make(arrays, fw, device, dtype):
    """Converts float64 numpy arrays to the framework, rounding through the dtype."""
    if fw == "numpy":
        return [a.astype(dtype) for a in arrays]
    if fw == "jax":
        return [jnp.asarray(a, getattr(jnp, dtype)) for a in arrays]
    return [torch.from_numpy(a).to(device=device, dtype=getattr(torch, dtype)) for a in arrays]


def host(x):
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x).astype(np.float64)  # (numpy, and jax: its bfloat16 through ml_dtypes)


def randn(rng, *shape):
    return rng.standard_normal(shape)


@pytest.mark.parametrize("case", frameworks())
@pytest.mark.parametrize("hq,hkv,d", [(4, 1, 64), (8, 2, 128), (7, 1, 64), (8, 8, 64)])
def test_varlen_attention_matches_reference(case, hq, hkv, d):
    fw, device, dtype = case
    if dtype != "float32" and device == "cpu" and hq == 7:
        pytest.skip("one bf16 CPU case is enough")
    rng = np.random.default_rng(hq * 100 + d)
    cu = [0, 1, 130, 700, 1300]  # 1 token, lengths not a multiple of the block
    n = cu[-1]
    q, k, v = make([randn(rng, n, hq, d), randn(rng, n, hkv, d), randn(rng, n, hkv, d)], fw, device, dtype)
    out, lse, stats = proxyattn.attention_varlen(q, k, v, cu, cu, 600, 600, return_lse=True,
                                                 return_stats=True, **SPARSE)
    mask = proxyattn.estimate(q, k, cu_seqlens=cu, **SPARSE)
    assert stats["kept_blocks"].sum() == int(mask.row_offsets[-1]) == len(mask.col_indices)
    assert stats["total_density"] < 1.0, "the sparse options kept every block"
    assert np.allclose(stats["density"], stats["kept_blocks"] / stats["causal_blocks"])
    ref_out, ref_lse = reference.attention(host(q), host(k), host(v), cu,
                                           (host(mask.row_offsets).astype(np.int64), host(mask.col_indices).astype(np.int64)))
    assert out.shape == q.shape and lse.shape == (hq, n)
    assert rel_err(host(out), ref_out) < tolerance(dtype)
    assert rel_err(host(lse), ref_lse) < (1e-5 if dtype == "float32" else 1e-3)


@pytest.mark.parametrize("case", frameworks())
def test_batched_layout_dense_and_gamma_one(case):
    fw, device, dtype = case
    rng = np.random.default_rng(7)
    q, k, v = make([randn(rng, 2, 300, 4, 64), randn(rng, 2, 300, 2, 64), randn(rng, 2, 300, 2, 64)], fw, device, dtype)
    dense, lse = proxyattn.dense_attention(q, k, v, return_lse=True)
    packed = [host(x).reshape(600, x.shape[2], 64) for x in (q, k, v)]
    ref_out, ref_lse = reference.attention(*packed, [0, 300, 600])
    assert dense.shape == q.shape and lse.shape == (2, 4, 300)  # flash_attn_func's layout
    assert rel_err(host(dense).reshape(600, 4, 64), ref_out) < tolerance(dtype)
    assert rel_err(host(lse), ref_lse.reshape(4, 2, 300).transpose(1, 0, 2)) < 1e-3
    full = proxyattn.attention(q, k, v, gamma=1.0)
    assert np.array_equal(host(full), host(dense)), "gamma = 1 must reproduce dense attention exactly"


@pytest.mark.parametrize("case", frameworks())
def test_sparse_attention_given_mask_strided_views_and_empty_rows(case):
    fw, device, dtype = case
    rng = np.random.default_rng(3)
    n, hq, hkv, d, block = 300, 4, 2, 64, 128
    qkv, = make([randn(rng, n, hq + 2 * hkv, d)], fw, device, dtype)
    q, k, v = qkv[:, :hq], qkv[:, hq:hq + hkv], qkv[:, hq + hkv:]  # token stride != row size
    rows, offsets = [], [0]
    for m in range(3):
        for h in range(hq):
            cols = [] if (m, h) == (1, 0) else sorted({m} | {c for c in range(m) if rng.random() < 0.5})
            rows += cols
            offsets.append(len(rows))
    ro, ci = np.array(offsets, np.int64), np.array(rows, np.int32)
    if fw == "torch":
        ro, ci = torch.from_numpy(ro).to(device), torch.from_numpy(ci).to(device)
    if fw == "jax":  # int32 offsets unless jax_enable_x64: the call takes them too
        ro, ci = jnp.asarray(ro), jnp.asarray(ci)
    out, lse = proxyattn.sparse_attention(q, k, v, (ro, ci), return_lse=True)
    ref_out, ref_lse = reference.attention(host(q), host(k), host(v), [0, n], (host(ro).astype(np.int64), host(ci).astype(np.int64)))
    assert (host(out)[128:256, 0] == 0).all() and np.isneginf(host(lse)[0, 128:256]).all()
    assert rel_err(host(out), ref_out) < tolerance(dtype)
    finite = np.isfinite(ref_lse)
    assert rel_err(host(lse)[finite], ref_lse[finite]) < 1e-3


@pytest.mark.parametrize("case", frameworks())
def test_nan_in_one_head_stays_there(case):
    fw, device, dtype = case
    rng = np.random.default_rng(11)
    cu = [0, 200, 456]
    arrays = [randn(rng, 456, 4, 64), randn(rng, 456, 2, 64), randn(rng, 456, 2, 64)]
    clean = host(proxyattn.attention(*make(arrays, fw, device, dtype), cu_seqlens=cu, **SPARSE))
    arrays[1][5, 0, 3] = np.nan  # a key of kv head 0 in the first sequence
    out = host(proxyattn.attention(*make(arrays, fw, device, dtype), cu_seqlens=cu, **SPARSE))
    assert np.isfinite(out[:, 2:]).all() and np.isfinite(out[200:]).all()
    assert np.array_equal(out[:, 2:], clean[:, 2:]) and np.array_equal(out[200:], clean[200:])


def test_out_argument_is_written_in_place():
    rng = np.random.default_rng(5)
    q, k, v = (randn(rng, 200, h, 32).astype(np.float32) for h in (2, 1, 1))
    out = np.full_like(q, np.nan)
    result = proxyattn.dense_attention(q, k, v, out=out)
    assert result is out and np.isfinite(out).all()


def test_errors_name_the_argument():
    rng = np.random.default_rng(1)
    q, k, v = (randn(rng, 1, 200, h, 32).astype(np.float32) for h in (4, 2, 2))
    with pytest.raises(ValueError, match="causal"):
        proxyattn.attention(q, k, v, causal=False)
    with pytest.raises(ValueError, match="dtype"):
        proxyattn.attention(q.astype(np.float64), k, v)
    with pytest.raises(ValueError, match="kv_heads"):
        proxyattn.attention(q, k[:, :, :1].repeat(3, axis=2), v[:, :, :1].repeat(3, axis=2))
    with pytest.raises(ValueError, match="gamma"):
        proxyattn.attention(q, k, v, gamma=1.5)
    with pytest.raises(ValueError, match="proxy_groups"):
        proxyattn.attention(q, k, v, proxy_groups=3)
    with pytest.raises(ValueError, match=r"\bk\b"):
        proxyattn.attention(q, k[:, :100], v)
    with pytest.raises(ValueError, match="q:"):
        proxyattn.attention(q[0, 0], k, v)
    with pytest.raises(TypeError, match="unexpected keyword"):
        proxyattn.attention(q, k, v, gama=0.9)
    with pytest.raises(TypeError, match="q:"):
        proxyattn.attention(q.tolist(), k, v)
    with pytest.raises(ValueError, match="cu_seqlens_k"):
        proxyattn.attention_varlen(q[0], k[0], v[0], [0, 200], [0, 100, 200])
    with pytest.raises(ValueError, match="row_offsets"):
        proxyattn.sparse_attention(q, k, v, (np.zeros(3, np.int64), np.zeros(1, np.int32)))
    with pytest.raises(TypeError, match="block_mask"):
        proxyattn.sparse_attention(q, k, v, "dense")
    batch = np.repeat(q, 2, axis=0).transpose(0, 2, 1, 3).copy().transpose(0, 2, 1, 3)
    with pytest.raises(ValueError, match="batch stride"):
        proxyattn.attention(batch, np.repeat(k, 2, 0), np.repeat(v, 2, 0))


@pytest.mark.skipif(torch is None, reason="torch is not installed")
def test_mixed_devices_and_frameworks_are_refused():
    q = torch.randn(1, 100, 2, 64)
    with pytest.raises(TypeError, match="same framework"):
        proxyattn.attention(q, q[:, :, :1].numpy(), q[:, :, :1])
    if HAS_CUDA:
        with pytest.raises(ValueError, match="cuda|cpu"):
            proxyattn.attention(q.cuda().bfloat16(), q[:, :, :1].bfloat16(), q[:, :, :1].cuda().bfloat16())


def test_cupy_arrays_on_cuda():
    cupy = pytest.importorskip("cupy", reason="cupy is not installed: the cupy case skips")
    if not HAS_CUDA:
        pytest.skip("no CUDA GPU (or a CPU-only build): the cupy case skips")
    rng = np.random.default_rng(13)
    arrays = [randn(rng, 700, 8, 64), randn(rng, 700, 2, 64), randn(rng, 700, 2, 64)]
    q, k, v = (cupy.asarray(a.astype(np.float16)) for a in arrays)
    out, lse = proxyattn.attention(q, k, v, return_lse=True, **SPARSE)
    mask = proxyattn.estimate(q, k, **SPARSE)
    assert isinstance(out, cupy.ndarray) and isinstance(mask.row_offsets, cupy.ndarray)
    ref_out, _ = reference.attention(*(a.astype(np.float16) for a in arrays), [0, 700],
                                     (cupy.asnumpy(mask.row_offsets), cupy.asnumpy(mask.col_indices).astype(np.int64)))
    assert rel_err(cupy.asnumpy(out), ref_out) < tolerance("float16")


@pytest.mark.skipif(jax is None, reason="jax is not installed")
def test_jax_arrays_come_back_as_jax_arrays_and_cannot_be_written():
    rng = np.random.default_rng(17)
    q, k, v = make([randn(rng, 2, 260, 4, 64), randn(rng, 2, 260, 2, 64), randn(rng, 2, 260, 2, 64)], "jax", "cpu",
                   "bfloat16")
    out, lse = proxyattn.attention(q, k, v, return_lse=True, **SPARSE)
    assert isinstance(out, jax.Array) and out.dtype == jnp.bfloat16 and out.shape == q.shape
    assert isinstance(lse, jax.Array) and lse.dtype == jnp.float32 and lse.shape == (2, 4, 260)
    mask = proxyattn.estimate(q, k, **SPARSE)  # numpy: 64-bit offsets whatever jax's x64 setting
    assert isinstance(mask.row_offsets, np.ndarray) and mask.row_offsets.dtype == np.int64
    again = proxyattn.sparse_attention(q, k, v, mask)
    assert np.array_equal(host(again), host(out)), "the estimated mask must give attention()'s output"
    outputs = [proxyattn.dense_attention(q, k, v) for _ in range(3)]  # each call its own buffer
    assert all(np.array_equal(host(o), host(outputs[0])) for o in outputs)
    with pytest.raises(TypeError, match="out: jax arrays cannot be written"):
        proxyattn.attention(q, k, v, out=jnp.zeros_like(q))
    with pytest.raises(TypeError, match="q: a traced jax array"):
        jax.jit(lambda a, b, c: proxyattn.attention(a, b, c))(q, k, v)
    with pytest.raises(TypeError, match="k: must come from the same framework"):
        proxyattn.attention(q, np.asarray(k, np.float32), v)
    with pytest.raises(TypeError, match="q: numpy bfloat16 arrays"):
        proxyattn.attention(np.asarray(q), np.asarray(k), np.asarray(v))


def test_every_input_is_checked_before_it_is_read():
    rng = np.random.default_rng(3)
    q, k, v = (randn(rng, 300, h, 32).astype(np.float32) for h in (4, 2, 2))
    mask = proxyattn.estimate(q, k, gamma=0.5, min_budget_tokens=0, block_size=64)
    ro, ci = np.asarray(mask.row_offsets), np.asarray(mask.col_indices)
    with pytest.raises(ValueError, match="col_indices has 3 entries"):
        proxyattn.sparse_attention(q, k, v, (ro, ci[:3]), block_size=64)
    bad = ro.copy()
    bad[2], bad[3] = bad[3] + 1, bad[2]
    with pytest.raises(ValueError, match="non-decreasing"):
        proxyattn.sparse_attention(q, k, v, (bad, ci), block_size=64)
    out = np.zeros_like(q)
    out.setflags(write=False)
    with pytest.raises(ValueError, match="out: the array is read-only"):
        proxyattn.dense_attention(q, k, v, out=out)
    with pytest.raises(ValueError, match="out: expected shape"):
        proxyattn.dense_attention(q, k, v, out=np.zeros((300, 4, 16), np.float32))
    with pytest.raises(TypeError, match="cu_seqlens: entry 1 must be an integer"):
        proxyattn.attention(q, k, v, cu_seqlens=[0, 100.7, 300])
    with pytest.raises(ValueError, match="cu_seqlens: entry 1 .* 32-bit"):
        proxyattn.attention(q, k, v, cu_seqlens=[0, 2 ** 31, 300])
    # A BlockMask carries its packing: the call needs no cu_seqlens of its own.
    packed = proxyattn.estimate(q, k, cu_seqlens=[0, 100, 300], gamma=0.5, min_budget_tokens=0, block_size=64)
    got = proxyattn.sparse_attention(q, k, v, packed)
    want = proxyattn.sparse_attention(q, k, v, packed, cu_seqlens=[0, 100, 300])
    assert np.array_equal(got, want)
    # Zero tokens: empty outputs, not an error about strides.
    empty = [np.zeros((0, h, 32), np.float32) for h in (4, 2, 2)]
    out, lse = proxyattn.attention(*empty, return_lse=True)
    assert out.shape == (0, 4, 32) and lse.shape == (4, 0)
    assert proxyattn.dense_attention(*empty).shape == (0, 4, 32)
    for shape in ((0, 5), (2, 0)):  # no sequences; sequences of no tokens
        q, k = np.zeros(shape + (4, 32), np.float32), np.zeros(shape + (2, 32), np.float32)
        out, lse = proxyattn.attention(q, k, k, return_lse=True)
        assert out.shape == shape + (4, 32) and lse.shape == (shape[0], 4, shape[1])
        assert proxyattn.sparse_attention(q, k, k, proxyattn.estimate(q, k)).shape == out.shape


def test_plan_cache_drops_the_oldest_plans_over_its_count_or_bytes(monkeypatch):
    from proxyattn import _api
    plans = _api._plans.__class__()
    monkeypatch.setattr(_api, "_plans", plans)
    monkeypatch.setattr(_api, "_PLAN_CACHE_SIZE", 3)
    monkeypatch.setattr(_api, "_PLAN_CACHE_BYTES", 100)
    for name, nbytes in (("a", 10), ("b", 20), ("c", 30)):
        plans[name] = (name, nbytes)
        _api._trim_plan_cache()
    assert list(plans) == ["a", "b", "c"]
    plans["d"] = ("d", 5)  # over the count: the oldest goes
    _api._trim_plan_cache()
    assert list(plans) == ["b", "c", "d"]
    plans["e"] = ("e", 60)  # 115 bytes: b goes (95 left)
    _api._trim_plan_cache()
    assert list(plans) == ["c", "d", "e"]
    plans["f"] = ("f", 500)  # larger than the budget alone: only the newest stays
    _api._trim_plan_cache()
    assert list(plans) == ["f"]
    # and the real cache still serves a call (CPU plans hold no workspace)
    monkeypatch.setattr(_api, "_plans", _api._plans.__class__())
    q = np.random.default_rng(0).standard_normal((300, 4, 64)).astype(np.float32)
    k = np.random.default_rng(1).standard_normal((300, 2, 64)).astype(np.float32)
    proxyattn.attention(q, k, k)
    proxyattn.attention(q, k, k)
    assert len(_api._plans) == 1
