"""eval/baselines/pooling.py: with max pooling it must give the library's own mask, its cell
scores must match a loop-based float64 reference for every pooling, and with another pooling every
row keeps as many blocks as the library's, causal, with the diagonal and the sink."""
import pathlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the study selectors need PyTorch (torch not installed)")
proxyattn = pytest.importorskip("proxyattn", reason="the study selectors call the proxyattn package")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))  # the repository root
from eval.baselines import from_csr, pooling  # noqa: E402

# (N, Hq, Hkv, D): a single block, N not a multiple of the block, GQA ratios 1, 4 and 7, D 128.
CASES = [(100, 2, 2, 64), (1000, 8, 2, 64), (700, 7, 1, 64), (900, 4, 4, 128)]
OPTIONS = [{}, {"gamma": 0.5, "min_budget_tokens": 128}, {"gamma": 0.8, "min_budget_tokens": 128, "head_columns": 1,
                                                           "keep_sink": False, "exact_last_block": False}]


def inputs(n, hq, hkv, d, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, hq, d, generator=g)
    k = torch.randn(n, hkv, d, generator=g)
    k[:: 37] += 2.5 * q[: 1].mean(1)  # a few strong keys, so that max and sum pooling disagree
    return q.to(torch.bfloat16).float(), k.to(torch.bfloat16).float()  # values the kernels see exactly


def library_mask(q, k, scale, options):
    est = proxyattn.estimate(q, k, scale, copy=False, **options)
    nb = -(-q.shape[0] // 128)
    ro = torch.as_tensor(np.asarray(est.row_offsets))
    return from_csr(ro, torch.as_tensor(np.asarray(est.col_indices))[: int(ro[-1])], q.shape[1], nb)


@pytest.mark.parametrize("n,hq,hkv,d", CASES)
@pytest.mark.parametrize("options", OPTIONS)
def test_max_pooling_is_the_library_mask(n, hq, hkv, d, options):
    q, k = inputs(n, hq, hkv, d, seed=n + hq)
    scale = d ** -0.5
    assert torch.equal(pooling.select(q, k, scale, pooling="max", **options), library_mask(q, k, scale, options))


@pytest.mark.parametrize("n,hq,hkv,d", CASES)
@pytest.mark.parametrize("how", ["sum", "max+sum"])
def test_other_poolings_keep_the_library_counts(n, hq, hkv, d, how):
    q, k = inputs(n, hq, hkv, d, seed=3 * n + hkv)
    scale, options = d ** -0.5, {"gamma": 0.5, "min_budget_tokens": 128}
    lib = library_mask(q, k, scale, options)
    mask = pooling.select(q, k, scale, pooling=how, **options)
    nb = lib.shape[1]
    assert torch.equal(mask.sum(-1), lib.sum(-1))
    assert not (mask & ~torch.ones(nb, nb, dtype=torch.bool).tril()).any()
    assert mask.diagonal(dim1=1, dim2=2).all() and mask[:, :, 0].all()


def ref_cells(q, k, scale, groups, stride, block, how):
    """Loops over numpy float64: the strided proxy softmax, pooled per (query block, key block)."""
    q, k = q.double().numpy(), k.double().numpy()
    n, hq, hkv = q.shape[0], q.shape[1], k.shape[1]
    nb = -(-n // block)
    out = np.zeros((groups, nb, nb))
    for j in range(groups):
        mx, sm, rows = np.zeros((nb, nb)), np.zeros((nb, nb)), np.zeros(nb)
        for a in range(0, n, stride):
            qa = q[a, j * hq // groups:(j + 1) * hq // groups].mean(0)
            s = np.array([scale * qa @ k[b, j * hkv // groups:(j + 1) * hkv // groups].mean(0)
                          for b in range(0, a + 1, stride)])
            p = np.exp(s - s.max())
            p /= p.sum()
            rows[a // block] += 1
            for i, b in enumerate(range(0, a + 1, stride)):
                mx[a // block, b // block] = max(mx[a // block, b // block], p[i])
                sm[a // block, b // block] += p[i]
        out[j] = {"max": mx, "sum": sm / np.maximum(rows, 1)[:, None], "max+sum": mx + sm / np.maximum(rows, 1)[:, None]}[how]
    return out


@pytest.mark.parametrize("how", pooling.POOLINGS)
def test_cells_match_the_reference(how):
    q, k = inputs(300, 4, 2, 64, seed=11)
    got = pooling._proxy_cells(q, k, 0.125, 2, 4, 128, how).numpy()
    np.testing.assert_allclose(got, ref_cells(q, k, 0.125, 2, 4, 128, how), rtol=1e-9, atol=1e-12)


def test_bad_pooling_is_a_clear_error():
    q, k = inputs(128, 2, 2, 64, seed=1)
    with pytest.raises(ValueError, match="pooling must be one of"):
        pooling.select(q, k, 0.125, pooling="mean")
