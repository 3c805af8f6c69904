"""The ctypes wrapper on the CPU backends with numpy inputs, against a float64 numpy attention
that applies the mask the library returns (so any mask the estimator picks is checked)."""
import numpy as np
import pytest

import reference as reference_module
from reference import rel_err

N, HQ, HKV, D, B = 300, 4, 2, 32, 64
CU = [0, 100, 300]
SPARSE = dict(gamma=0.3, min_budget_tokens=0)  # small enough that random inputs drop blocks


def inputs(seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((N, HQ, D)).astype(dtype)
    k = rng.standard_normal((N, HKV, D)).astype(dtype)
    v = rng.standard_normal((N, HKV, D)).astype(dtype)
    return q, k, v


def poisoned():
    return np.full((N, HQ, D), np.nan, np.float32), np.full((HQ, N), np.nan, np.float32)


def block_keep(row_offsets, col_indices, seq, head, nb):
    return reference_module.block_keep(row_offsets, col_indices, CU, seq, HQ, head, B)


def reference(q, k, v, mask=None):
    return reference_module.attention(q, k, v, CU, mask, B)


def check_mask(est, plan):
    ro, ci = est["row_offsets"], est["col_indices"]
    assert ro.dtype == np.int64 and ci.dtype == np.int32
    assert len(ro) == plan.mask_rows + 1 == est["num_rows"] + 1
    assert ro[0] == 0 and len(ci) == ro[-1] <= plan.mask_capacity
    assert est["budget"].shape == est["kept"].shape == (len(CU) - 1, HQ)
    assert est["kept"].sum() == ro[-1]
    for s in range(len(CU) - 1):
        nb = -(-(CU[s + 1] - CU[s]) // B)
        for h in range(HQ):
            blocks = block_keep(ro, ci, s, h, nb)
            assert not np.triu(blocks, 1).any(), "a kept block above the diagonal"
            assert blocks.diagonal().all() and blocks[:, 0].all(), "a forced block is missing"


@pytest.mark.parametrize("backend", ["cpu", "cpu_reference"])
@pytest.mark.parametrize("config", [{}, SPARSE], ids=["default", "sparse"])
def test_attention_matches_reference(pa, backend, config):
    q, k, v = inputs(1)
    with pa.Plan(HQ, HKV, D, "float32", "cpu", CU, block_size=B, backend=backend, **config) as plan:
        out, lse = poisoned()
        est = plan.attention(q, k, v, out, lse, return_estimate=True)
        check_mask(est, plan)
        if config:
            assert est["row_offsets"][-1] < plan.mask_capacity, "the sparse config kept every block"
        else:
            assert est["row_offsets"][-1] == plan.mask_capacity  # the budget floor keeps all
        ref_out, ref_lse = reference(q, k, v, (est["row_offsets"], est["col_indices"]))
        assert np.isfinite(out).all() and np.isfinite(lse).all()
        assert rel_err(out, ref_out) < 1e-5
        assert rel_err(lse, ref_lse) < 1e-5
        # estimate() alone gives the same mask as attention() did.
        again = plan.estimate(q, k)
        assert np.array_equal(again["row_offsets"], est["row_offsets"])
        assert np.array_equal(again["col_indices"], est["col_indices"])


def test_dense_matches_reference(pa):
    q, k, v = inputs(2)
    plan = pa.Plan(HQ, HKV, D, np.float32, "cpu", CU, block_size=B)
    assert plan.num_blocks == 2 + 4 and plan.mask_rows == 6 * HQ
    assert plan.mask_capacity == HQ * (3 + 10) and plan.workspace_bytes == 0
    out, lse = poisoned()
    plan.dense_attention(q, k, v, out, lse)
    ref_out, ref_lse = reference(q, k, v)
    assert rel_err(out, ref_out) < 1e-5 and rel_err(lse, ref_lse) < 1e-5
    out2, _ = poisoned()
    plan.dense_attention(q, k, v, out2)  # lse is optional
    assert np.array_equal(out, out2)
    plan.close()
    plan.close()  # idempotent


def test_sparse_attention_hand_mask_and_strided_inputs(pa):
    # q, k, v are views into one packed qkv array, so the token stride is not the row size.
    rng = np.random.default_rng(3)
    qkv = rng.standard_normal((N, HQ + 2 * HKV, D)).astype(np.float32)
    q, k, v = qkv[:, :HQ], qkv[:, HQ:HQ + HKV], qkv[:, HQ + HKV:]
    plan = pa.Plan(HQ, HKV, D, "float32", "cpu", CU, block_size=B)
    # Row by row: the diagonal block plus a random subset of the earlier ones; some rows of the
    # second sequence keep nothing at all (allowed through the raw mask API: O = 0, LSE = -inf).
    rows, offsets = [], [0]
    for nb in (2, 4):
        for m in range(nb):
            for h in range(HQ):
                if nb == 4 and m == 1 and h == 0:
                    cols = []
                else:
                    cols = sorted({m} | {c for c in range(m) if rng.random() < 0.5})
                rows += cols
                offsets.append(len(rows))
    ro, ci = np.array(offsets, np.int64), np.array(rows, np.int32)
    out, lse = poisoned()
    plan.sparse_attention(q, k, v, ro, ci, out, lse)
    empty = slice(CU[1] + B, CU[1] + 2 * B)  # sequence 1, query block 1
    assert (out[empty, 0] == 0).all() and np.isneginf(lse[0, empty]).all()
    keep_rows = np.ones(N, bool)
    keep_rows[empty] = False
    ref_out, ref_lse = reference(q, k, v, (ro, ci))
    assert rel_err(out, np.nan_to_num(ref_out)) < 1e-5
    assert rel_err(lse[0, keep_rows], ref_lse[0, keep_rows]) < 1e-5
    assert rel_err(lse[1:], ref_lse[1:]) < 1e-5
    with pytest.raises(pa.ProxyAttnError, match="row_offsets"):
        plan.sparse_attention(q, k, v, ro[:-1], ci, out, lse)
    with pytest.raises(pa.ProxyAttnError, match="col_indices holds"):  # not read past its end
        plan.sparse_attention(q, k, v, ro, ci[:-2].copy(), out, lse)


def test_errors(pa):
    q, k, v = inputs(4)
    plan = pa.Plan(HQ, HKV, D, "float32", "cpu", CU, block_size=B)
    out, lse = poisoned()
    with pytest.raises(pa.ProxyAttnError, match=r"\bq\b") as info:
        plan.dense_attention(q[:, :HQ - 1], k, v, out, lse)
    assert info.value.code == 1
    with pytest.raises(pa.ProxyAttnError, match="lse"):
        plan.dense_attention(q, k, v, out, lse[:, :10])
    with pytest.raises(pa.ProxyAttnError, match="gamma"):
        pa.Plan(HQ, HKV, D, "float32", "cpu", CU, gamma=2.0)
    with pytest.raises(pa.ProxyAttnError, match="kv_heads"):
        pa.Plan(HQ, 3, D, "float32", "cpu", CU)
    with pytest.raises(pa.ProxyAttnError, match="backend"):
        pa.Plan(HQ, HKV, D, "float32", "cpu", CU, backend="tpu")
    with pytest.raises(pa.ProxyAttnError) as info:  # no CUDA backend in a CPU build
        pa.Plan(HQ, HKV, D, "float32", "cuda:0", CU, backend="cuda")
    assert info.value.code in (1, 2)
    with pytest.raises(TypeError):
        pa.Plan(HQ, HKV, D, "float32", "cpu", CU, blocksize=64)


def test_c_null_arguments(pa):
    # Null pointers are reported as invalid arguments naming the argument, not crashes.
    import ctypes
    lib = pa._load()
    assert lib.pa_estimate(None, None, None, None, None) == 1
    assert "plan" in lib.pa_last_error().decode()
    handle = ctypes.c_void_p()
    cfg = pa._Config()
    lib.pa_config_default(ctypes.byref(cfg))
    assert (cfg.block_size, cfg.stride, cfg.proxy_groups, cfg.min_budget_tokens, cfg.exact_last_block,
            cfg.head_columns) == (128, 4, 0, 2048, 1, 16)  # the C++ defaults
    assert lib.pa_plan_create(ctypes.byref(cfg), HQ, HKV, D, 0, 0, 0, None, 1, None, ctypes.byref(handle)) == 1
    assert "cu_seqlens_host" in lib.pa_last_error().decode()
    assert lib.pa_plan_num_blocks(None) == -1
    # The first null tensor in argument order is the one named.
    assert lib.pa_dense_attention(None, None, None, None, None, None, None) == 1
    assert "plan" in lib.pa_last_error().decode()
    q, k, v = inputs(5)
    plan = pa.Plan(HQ, HKV, D, "float32", "cpu", CU, block_size=B)
    assert lib.pa_dense_attention(plan._handle, None, None, None, None, None, None) == 1
    assert "q is null" in lib.pa_last_error().decode()
    assert lib.pa_sparse_attention(plan._handle, pa._tensor(q, "q"), pa._tensor(k, "k"), pa._tensor(v, "v"),
                                   None, None, 0, None, None, None) == 1
    assert "row_offsets is null" in lib.pa_last_error().decode()


def test_c_plan_with_fewer_queries_than_keys(pa):
    # pa_plan_create_kv: a chunk's queries against all its sequence's keys give the whole
    # prompt's last rows.
    import ctypes
    lib = pa._load()
    rng = np.random.default_rng(4)
    n, nq = 150, 37
    q_all = rng.standard_normal((n, HQ, D)).astype(np.float32)
    k, v = (rng.standard_normal((n, HKV, D)).astype(np.float32) for _ in range(2))
    want, _ = reference_module.attention(q_all, k, v, [0, n])
    q = np.ascontiguousarray(q_all[n - nq:])
    cfg = pa._Config()
    lib.pa_config_default(ctypes.byref(cfg))
    cfg.block_size, cfg.backend = B, 2  # PA_BACKEND_CPU
    cu_q, cu_k = (ctypes.c_int32 * 2)(0, nq), (ctypes.c_int32 * 2)(0, n)
    handle = ctypes.c_void_p()
    assert lib.pa_plan_create_kv(ctypes.byref(cfg), HQ, HKV, D, 0, 0, 0, cu_q, None, 1, 0, None,
                                 ctypes.byref(handle)) == 1
    assert "cu_seqlens_k_host" in lib.pa_last_error().decode()
    assert lib.pa_plan_create_kv(ctypes.byref(cfg), HQ, HKV, D, 0, 0, 0, cu_k, cu_q, 1, 0, None,
                                 ctypes.byref(handle)) == 1
    assert "150 queries but 37 keys" in lib.pa_last_error().decode()
    assert lib.pa_plan_create_kv(ctypes.byref(cfg), HQ, HKV, D, 0, 0, 0, cu_q, cu_k, 1, 0, None,
                                 ctypes.byref(handle)) == 0, lib.pa_last_error()
    out = np.full((nq, HQ, D), np.nan, np.float32)
    try:
        assert lib.pa_dense_attention(handle, pa._tensor(q, "q"), pa._tensor(k, "k"), pa._tensor(v, "v"),
                                      pa._tensor(out, "out"), None, None) == 0, lib.pa_last_error()
    finally:
        lib.pa_plan_destroy(handle)
    assert rel_err(out, want[n - nq:]) < 1e-5
    # The same keys in pages of 16 (reversed order, one spare page) through a block table.
    pages = -(-n // 16)
    kc, vc = (np.full((pages + 1, 16, HKV, D), np.nan, np.float32) for _ in range(2))
    table = np.arange(pages, 0, -1, dtype=np.int32)[None]  # page i of the sequence sits at pages - i
    for t in range(n):
        kc[table[0, t // 16], t % 16], vc[table[0, t // 16], t % 16] = k[t], v[t]
    assert lib.pa_plan_create_kv(ctypes.byref(cfg), HQ, HKV, D, 0, 0, 0, cu_q, cu_k, 1, 16, None,
                                 ctypes.byref(handle)) == 0, lib.pa_last_error()
    out[:] = np.nan
    try:
        assert lib.pa_dense_attention(handle, pa._tensor(q, "q"), pa._tensor(k, "k"), pa._tensor(v, "v"),
                                      pa._tensor(out, "out"), None, None) == 1
        assert "KvCache" in lib.pa_last_error().decode()
        assert lib.pa_dense_attention_paged(handle, pa._tensor(q, "q"), pa._tensor(kc, "k_cache"),
                                            pa._tensor(vc, "v_cache"), pa._tensor(table, "block_table"),
                                            pa._tensor(out, "out"), None, None) == 0, lib.pa_last_error()
        assert rel_err(out, want[n - nq:]) < 1e-5
        est = pa._Estimate()
        assert lib.pa_attention_paged(handle, pa._tensor(q, "q"), pa._tensor(kc, "k_cache"), pa._tensor(vc, "v_cache"),
                                      pa._tensor(table, "block_table"), pa._tensor(out, "out"), None, None,
                                      ctypes.byref(est)) == 0, lib.pa_last_error()
        assert np.isfinite(out).all() and est.num_rows == lib.pa_plan_mask_rows(handle)
    finally:
        lib.pa_plan_destroy(handle)
