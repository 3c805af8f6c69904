"""Baseline selectors against slow, loop-based float64 numpy references written independently
of the vectorised code, plus the CSR layout, the density definition, matched density and
argument checks. CPU only, small sizes, fresh random inputs with fixed seeds."""
import math
import pathlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the baseline selectors need PyTorch (torch not installed)")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))  # the repository root
from eval.baselines import (common, density, flexprefill_estimate, flexprefill_mask, from_csr,  # noqa: E402
                            match_density, static_mask, to_csr, xattention_estimate, xattention_mask)

B, D = 32, 64
# (N, Hq, Hkv): N = 1 token, N not a multiple of B, GQA ratios 1 and 4.
CASES = [(1, 2, 2), (77, 8, 2), (200, 4, 4), (300, 8, 2)]
THRESHOLDS = [0.0, 0.3, 0.8, 0.95, 1.0]
PATTERNS = ["last_block", "vertical_slash", "query_aware", "auto"]


def inputs(n, hq, hkv, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    # a scale above 1 makes the attention peaked enough for the selectors to drop blocks
    q = 2.0 * torch.randn(n, hq, D, generator=g, dtype=torch.float64)
    k = 2.0 * torch.randn(n, hkv, D, generator=g, dtype=torch.float64)
    return q.to(dtype), k.to(dtype)


# ----------------------------------------------------------------------------------------------
# References: plain loops over numpy float64 arrays.

def ref_softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def ref_keep_row(score, m, forced, t):
    """Forced blocks, then the others of 0..m by decreasing score (ties: lower index), while
    the mass kept so far is below t times the row's mass. t >= 1: every block 0..m."""
    if t >= 1.0:
        return set(range(m + 1))
    kept = set(forced)
    total = sum(score[n] for n in range(m + 1))
    mass = sum(score[n] for n in sorted(forced))
    rest = sorted((n for n in range(m + 1) if n not in forced), key=lambda n: (-score[n], n))
    for n in rest:
        if not mass < t * total:
            break
        kept.add(n)
        mass += score[n]
    return kept


def ref_forced(m, keep_sink):
    return {m, 0} if keep_sink else {m}


def ref_last_probs(q, k, h, r):
    """P[i, j] of the last min(B, N) queries of head h over all keys (causal softmax)."""
    n = q.shape[0]
    bq = min(B, n)
    p = np.zeros((bq, n))
    for i in range(bq):
        pos = n - bq + i
        logits = np.array([q[pos, h] @ k[j, h // r] for j in range(pos + 1)]) / math.sqrt(D)
        p[i, :pos + 1] = ref_softmax(logits)
    return p


def ref_block_of(x, nb):
    """Sum a per-token vector per block."""
    out = np.zeros(nb)
    for j, v in enumerate(x):
        out[j // B] += v
    return out


def ref_top(score, count, first):
    order = sorted(range(len(score)), key=lambda n: (-score[n], n))
    if first is not None:
        order.remove(first)
        order.insert(0, first)
    return set(order[:count])


def ref_tokens_reaching(x, t):
    vals = sorted(x, reverse=True)
    total, mass, count = sum(vals), 0.0, 0
    while count < len(vals) and mass < t * total:
        mass += vals[count]
        count += 1
    return count


def ref_js(q, kbar, colmass, h, bq):
    """The switch: sqrt Jensen-Shannon divergence between softmax(mean of the last queries .
    block-mean keys) over all blocks and the pooled vertical mass."""
    nb = len(kbar)
    qlast = q[q.shape[0] - bq:, h].mean(0)
    est = ref_softmax(np.array([qlast @ kbar[c] for c in range(nb)]) / math.sqrt(D))
    mid = (est + colmass) / 2
    kl = lambda x: sum(x[c] * math.log(x[c] / mid[c]) for c in range(nb) if x[c] > 0)
    return math.sqrt(max(0.0, 0.5 * kl(est) + 0.5 * kl(colmass)))


def ref_flexprefill(q, k, t, pattern, keep_sink=True, tau=0.1, min_blocks=1):
    q, k = q.numpy(), k.numpy()
    n, hq, _ = q.shape
    r = hq // k.shape[1]
    nb = -(-n // B)
    bq = min(B, n)
    mask = np.zeros((hq, nb, nb), bool)
    for h in range(hq):
        p = ref_last_probs(q, k, h, r)
        vertical = p.mean(0)
        colmass = ref_block_of(vertical, nb)
        if pattern == "last_block":
            for m in range(nb):
                for c in ref_keep_row(colmass, m, ref_forced(m, keep_sink), t):
                    mask[h, m, c] = True
            continue
        slash = np.zeros(n)
        for i in range(bq):
            pos = n - bq + i
            for dist in range(pos + 1):
                slash[dist] += p[i, pos - dist] / bq

        def vs_mask(kv, ks):
            cols = ref_top(colmass, kv, 0 if keep_sink else None)
            offs = ref_top(ref_block_of(slash, nb), ks, 0)
            out = np.zeros((nb, nb), bool)
            for m in range(nb):
                for c in range(m + 1):
                    out[m, c] = c in cols or (m - c) in offs or c in ref_forced(m, keep_sink)
            return out

        def count(x):
            return nb if t >= 1.0 else min(max(ref_tokens_reaching(x, t) // B + 1, min_blocks), nb)

        vs = vs_mask(count(vertical), count(slash))
        # query-aware: block means of q and k, causal softmax per row, global cover
        qbar = [q[m * B:(m + 1) * B, h].mean(0) for m in range(nb)]
        kbar = [k[m * B:(m + 1) * B, h // r].mean(0) for m in range(nb)]
        a = np.zeros((nb, nb))
        for m in range(nb):
            a[m, :m + 1] = ref_softmax(np.array([qbar[m] @ kbar[c] for c in range(m + 1)]) / math.sqrt(D))
        aware = vs_mask(min_blocks, min_blocks)
        cells = sorted(((m, c) for m in range(nb) for c in range(m + 1)), key=lambda mc: (-a[mc], mc))
        total, mass = sum(a[mc] for mc in cells), 0.0
        for mc in cells:
            if not (t >= 1.0 or mass < t * total):
                break
            aware[mc] = True
            mass += a[mc]
        js = ref_js(q, kbar, colmass, h, bq)
        use_aware = pattern == "query_aware" or (pattern == "auto" and js < tau)
        mask[h] = aware if use_aware else vs
    return mask


def ref_xattention_scores(q, k, stride):
    """Antidiagonal sums of every stride x stride tile, softmax per strided row over its
    causal strided keys, summed per (query block, key block)."""
    q, k = q.numpy(), k.numpy()
    n, hq, _ = q.shape
    r = hq // k.shape[1]
    nb = -(-n // B)
    rows = nb * B // stride
    zero = np.zeros(D)
    tok = lambda x, i, h: x[i, h] if i < n else zero
    out = np.zeros((hq, nb, nb))
    for h in range(hq):
        for i in range(rows):
            if i * stride >= n:  # a strided row made only of padding
                continue
            keys = [j for j in range(i + 1) if j * stride < n]
            logits = []
            for j in keys:
                s = sum(tok(q, i * stride + stride - 1 - t, h) @ tok(k, j * stride + t, h // r)
                        for t in range(stride))
                logits.append(s / math.sqrt(D) / stride)
            for j, p in zip(keys, ref_softmax(np.array(logits))):
                out[h, i * stride // B, j * stride // B] += p
    return out


def ref_select(scores, t, keep_sink=True):
    hq, nb, _ = scores.shape
    mask = np.zeros((hq, nb, nb), bool)
    for h in range(hq):
        for m in range(nb):
            for c in ref_keep_row(scores[h, m], m, ref_forced(m, keep_sink), t):
                mask[h, m, c] = True
    return mask


def check_structure(mask, hq, nb, keep_sink=True):
    assert mask.dtype == torch.bool and tuple(mask.shape) == (hq, nb, nb)
    assert not (mask & ~torch.ones(nb, nb, dtype=torch.bool).tril()).any(), "mask is not causal"
    assert mask.diagonal(dim1=1, dim2=2).all(), "diagonal block dropped"
    if keep_sink:
        assert mask[:, :, 0].all(), "sink block dropped"


# ----------------------------------------------------------------------------------------------
# Selectors against the references.

@pytest.mark.parametrize("n,hq,hkv", CASES)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_flexprefill_matches_reference(n, hq, hkv, pattern):
    q, k = inputs(n, hq, hkv, seed=n + hq)
    nb = -(-n // B)
    sel = flexprefill_estimate(q, k, block_size=B, pattern=pattern)
    for t in THRESHOLDS:
        got = sel.mask_at(t)
        check_structure(got, hq, nb)
        want = ref_flexprefill(q, k, t, pattern)
        assert np.array_equal(got.numpy(), want), f"pattern {pattern}, gamma {t}"
        assert torch.equal(got, flexprefill_mask(q, k, t, block_size=B, pattern=pattern))


def test_flexprefill_auto_uses_both_patterns():
    # with tau = 1 every head is query-aware, with tau = 0 none: auto equals the pure patterns
    q, k = inputs(300, 8, 2, seed=5)
    for tau, same in ((1.0, "query_aware"), (0.0, "vertical_slash")):
        a = flexprefill_mask(q, k, 0.8, block_size=B, pattern="auto", tau=tau)
        assert torch.equal(a, flexprefill_mask(q, k, 0.8, block_size=B, pattern=same))


def test_flexprefill_auto_mixes_heads():
    # tau between the heads' divergences: some heads query-aware, the others vertical-slash
    q, k = inputs(300, 8, 2, seed=7)
    qn, kn = q.numpy(), k.numpy()
    nb, r = 10, 4
    kbar = lambda h: [kn[m * B:(m + 1) * B, h // r].mean(0) for m in range(nb)]
    js = sorted(ref_js(qn, kbar(h), ref_block_of(ref_last_probs(qn, kn, h, r).mean(0), nb), h, B)
                for h in range(8))
    tau = (js[3] + js[4]) / 2
    sel = flexprefill_estimate(q, k, block_size=B, pattern="auto", tau=tau)
    assert sel.query_aware.sum() == 4
    for t in (0.5, 0.9):
        assert np.array_equal(sel.mask_at(t).numpy(), ref_flexprefill(q, k, t, "auto", tau=tau))


def test_flexprefill_without_sink_and_min_budget():
    q, k = inputs(300, 4, 2, seed=6)
    for pattern in PATTERNS:
        got = flexprefill_mask(q, k, 0.5, block_size=B, pattern=pattern, keep_sink=False,
                               min_budget_tokens=70)
        want = ref_flexprefill(q, k, 0.5, pattern, keep_sink=False, min_blocks=3)
        assert np.array_equal(got.numpy(), want), pattern
        check_structure(got, 4, 10, keep_sink=False)


@pytest.mark.parametrize("n,hq,hkv", CASES)
@pytest.mark.parametrize("stride", [4, 8])
def test_xattention_matches_reference(n, hq, hkv, stride):
    q, k = inputs(n, hq, hkv, seed=2 * n + stride)
    nb = -(-n // B)
    ref_scores = ref_xattention_scores(q, k, stride)
    from eval.baselines import xattention_scores
    got_scores = xattention_scores(q, k, block_size=B, stride=stride)
    assert np.allclose(got_scores.numpy(), ref_scores, rtol=1e-10, atol=1e-12)
    sel = xattention_estimate(q, k, block_size=B, stride=stride)
    for t in THRESHOLDS:
        got = sel.mask_at(t)
        check_structure(got, hq, nb)
        assert np.array_equal(got.numpy(), ref_select(ref_scores, t)), f"tau {t}"
    no_sink = xattention_mask(q, k, 0.5, block_size=B, stride=stride, keep_sink=False)
    assert np.array_equal(no_sink.numpy(), ref_select(ref_scores, 0.5, keep_sink=False))


@pytest.mark.parametrize("n,window,sink", [(1, 1, 1), (77, 1, 0), (300, 3, 1), (300, 4, 2), (300, 20, 1)])
def test_static_matches_reference(n, window, sink):
    nb = -(-n // B)
    got = static_mask(n, 3, window, sink_blocks=sink, block_size=B)
    want = np.zeros((3, nb, nb), bool)
    for h in range(3):
        for m in range(nb):
            for c in range(m + 1):
                want[h, m, c] = c < sink or m - c < window
    assert np.array_equal(got.numpy(), want)
    check_structure(got, 3, nb, keep_sink=sink > 0)


def test_float32_inputs_agree_with_float64():
    # float32 scores may flip a block whose cut sits within rounding of the threshold: rare
    q, k = inputs(300, 8, 2, seed=9)
    for f in (lambda q, k: flexprefill_mask(q, k, 0.9, block_size=B),
              lambda q, k: flexprefill_mask(q, k, 0.9, block_size=B, pattern="auto"),
              lambda q, k: xattention_mask(q, k, 0.9, block_size=B, stride=8)):
        a, b = f(q, k), f(q.float(), k.float())
        assert (a != b).float().mean() < 0.01


def test_packed_and_half_precision_inputs():
    # q and k as slices of one packed qkv tensor (not contiguous), and bf16 inputs
    q, k = inputs(300, 8, 2, seed=10, dtype=torch.float32)
    qkv = torch.cat([q, k, torch.zeros_like(k)], dim=1)
    qs, ks = qkv[:, :8], qkv[:, 8:10]
    assert not qs.is_contiguous()
    calls = [lambda q, k: flexprefill_mask(q, k, 0.9, block_size=B, pattern=p) for p in PATTERNS]
    calls.append(lambda q, k: xattention_mask(q, k, 0.9, block_size=B, stride=8))
    for f in calls:
        want = f(q, k)
        assert torch.equal(f(qs, ks), want)
        half = f(q.bfloat16(), k.bfloat16())
        check_structure(half, 8, 10)
        assert (half != want).float().mean() < 0.05


# ----------------------------------------------------------------------------------------------
# Thresholds, sparsity, chunking.

@pytest.mark.parametrize("make", [
    lambda q, k, t: flexprefill_mask(q, k, t, block_size=B),
    lambda q, k, t: flexprefill_mask(q, k, t, block_size=B, pattern="vertical_slash"),
    lambda q, k, t: flexprefill_mask(q, k, t, block_size=B, pattern="auto"),
    lambda q, k, t: xattention_mask(q, k, t, block_size=B, stride=8),
])
def test_threshold_one_is_dense_and_small_is_sparse(make):
    q, k = inputs(600, 4, 2, seed=11)
    nb = -(-600 // B)
    full = make(q, k, 1.0)
    assert torch.equal(full, torch.ones(4, nb, nb, dtype=torch.bool).tril().expand(4, nb, nb))
    sparse = make(q, k, 0.2)
    check_structure(sparse, 4, nb)
    assert density(sparse) < 0.5
    # the density never decreases with the threshold
    ds = [density(make(q, k, t)) for t in (0.0, 0.2, 0.5, 0.8, 0.95, 1.0)]
    assert ds == sorted(ds) and ds[-1] == 1.0


def test_chunked_paths_give_the_same_masks(monkeypatch):
    q, k = inputs(300, 8, 2, seed=12)
    want = [flexprefill_mask(q, k, 0.8, block_size=B, pattern=p) for p in PATTERNS]
    want.append(xattention_mask(q, k, 0.8, block_size=B, stride=4))
    monkeypatch.setattr(common, "CHUNK_ELEMENTS", 64)  # one head and one query block at a time
    got = [flexprefill_mask(q, k, 0.8, block_size=B, pattern=p) for p in PATTERNS]
    got.append(xattention_mask(q, k, 0.8, block_size=B, stride=4))
    for a, b in zip(got, want):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------
# Density, CSR layout.

def test_density_counts_causal_blocks_only():
    mask = torch.zeros(2, 3, 3, dtype=torch.bool)
    mask[:, range(3), range(3)] = True        # the diagonal: 3 of 6 causal blocks per head
    mask[0, 0, 2] = True                      # above the diagonal: not counted
    assert density(mask) == 6 / 12
    mask[1, 2, 0] = True
    assert density(mask) == 7 / 12
    assert density(torch.ones(4, 5, 5, dtype=torch.bool)) == 1.0


def test_csr_layout_and_round_trip():
    g = torch.Generator().manual_seed(3)
    hq, nb = 3, 6
    mask = (torch.rand(hq, nb, nb, generator=g) < 0.5).tril()
    mask[1, 4] = False                        # an empty row
    offsets, cols = to_csr(mask)
    assert offsets.dtype == torch.int64 and cols.dtype == torch.int32
    assert offsets.is_contiguous() and cols.is_contiguous()
    assert offsets.shape == (nb * hq + 1,) and offsets[0] == 0 and offsets[-1] == cols.numel()
    for m in range(nb):
        for h in range(hq):
            row = m * hq + h                  # query block major, head minor
            got = cols[offsets[row]:offsets[row + 1]].tolist()
            assert got == [c for c in range(nb) if mask[h, m, c]]  # ascending
    assert torch.equal(from_csr(offsets, cols, hq, nb), mask)
    q, k = inputs(200, 4, 1, seed=4)
    real = xattention_mask(q, k, 0.7, block_size=B, stride=8)
    assert torch.equal(from_csr(*to_csr(real), 4, real.shape[1]), real)


# ----------------------------------------------------------------------------------------------
# Matched density.

@pytest.mark.parametrize("selector,options", [
    ("flexprefill", {}), ("flexprefill", {"pattern": "query_aware"}), ("xattention", {"stride": 8}),
])
@pytest.mark.parametrize("target", [0.3, 0.5, 0.75])
def test_match_density_within_one_block_per_head(selector, options, target):
    hq = 4
    q, k = inputs(600, hq, 2, seed=13)
    nb = -(-600 // B)
    res = match_density(selector, target, q, k, block_size=B, **options)
    causal = hq * nb * (nb + 1) // 2
    assert abs(res.density * causal - target * causal) <= hq
    assert res.density == density(res.mask)
    check_structure(res.mask, hq, nb)
    est = flexprefill_estimate if selector == "flexprefill" else xattention_estimate
    assert torch.equal(est(q, k, block_size=B, **options).mask_at(res.parameter), res.mask)


@pytest.mark.parametrize("selector,options", [
    ("flexprefill", {"pattern": "vertical_slash"}), ("flexprefill", {"pattern": "auto"}),
])
def test_match_density_coarse_patterns_are_closest(selector, options):
    # vertical-slash adds whole columns and diagonals: no grid threshold may come closer
    q, k = inputs(600, 4, 2, seed=14)
    sel = flexprefill_estimate(q, k, block_size=B, **options)
    for target in (0.3, 0.6):
        res = match_density(selector, target, q, k, block_size=B, **options)
        best = min(abs(density(sel.mask_at(t)) - target) for t in np.linspace(0, 1, 401))
        assert abs(res.density - target) <= best + 1e-12


def test_match_density_static_picks_the_closest_window():
    q, k = inputs(600, 4, 2, seed=15)
    nb = -(-600 // B)
    for target in (0.1, 0.37, 0.8):
        res = match_density("static", target, q, k, block_size=B, sink_blocks=1)
        errors = [abs(density(static_mask(600, 4, w, block_size=B)) - target) for w in range(1, nb + 1)]
        assert abs(res.density - target) == min(errors)
        assert torch.equal(res.mask, static_mask(600, 4, res.parameter, block_size=B))


def test_match_density_extremes():
    q, k = inputs(300, 4, 2, seed=16)
    assert match_density("xattention", 1.0, q, k, block_size=B).density == 1.0
    low = match_density("xattention", 0.0, q, k, block_size=B)
    assert torch.equal(low.mask, xattention_mask(q, k, 0.0, block_size=B))   # forced blocks only


# ----------------------------------------------------------------------------------------------
# Argument checks.

@pytest.mark.parametrize("call,name", [
    (lambda q, k: flexprefill_mask(q[0], k), "q"),
    (lambda q, k: flexprefill_mask(q, k[:, :, :32]), "k"),
    (lambda q, k: xattention_mask(q, k[:10]), "k"),
    (lambda q, k: xattention_mask(q[:, :3], k), "k heads"),
    (lambda q, k: xattention_mask(q, k, block_size=0), "block_size"),
    (lambda q, k: xattention_mask(q, k, block_size=32, stride=5), "stride"),
    (lambda q, k: xattention_mask(q, k, tau=1.5), "tau"),
    (lambda q, k: flexprefill_mask(q, k, gamma=-0.1), "gamma"),
    (lambda q, k: flexprefill_mask(q, k, pattern="diagonal"), "pattern"),
    (lambda q, k: flexprefill_mask(q, k, min_budget_tokens=-1), "min_budget_tokens"),
    (lambda q, k: match_density("xattention", 2.0, q, k), "target_density"),
    (lambda q, k: match_density("minference", 0.5, q, k), "selector"),
    (lambda q, k: static_mask(100, 4, 0), "window_blocks"),
    (lambda q, k: to_csr(torch.zeros(3, 3)), "mask"),
    (lambda q, k: density(torch.zeros(2, 3, 4, dtype=torch.bool)), "mask"),
])
def test_bad_arguments_raise_value_error_naming_them(call, name):
    q, k = inputs(100, 4, 2, seed=17)
    with pytest.raises(ValueError, match="^" + name):
        call(q, k)


# ----------------------------------------------------------------------------------------------
# The library itself, through the installed proxyattn package (skipped when it is not installed):
# a baseline mask feeds its sparse kernel, and its own mask read back through from_csr has the
# density it reports.

def test_masks_feed_the_library_sparse_kernel():
    proxyattn = pytest.importorskip("proxyattn", reason="the proxyattn package is not installed (pip install .)")
    n, hq, hkv = 300, 4, 2
    nb = -(-n // B)
    q, k = inputs(n, hq, hkv, seed=20, dtype=torch.float32)
    v = torch.randn(n, hkv, D, generator=torch.Generator().manual_seed(21))
    mask = xattention_mask(q, k, 0.6, block_size=B, stride=8)
    assert density(mask) < 0.9
    out = proxyattn.sparse_attention(q, k, v, to_csr(mask), out=torch.full_like(q, float("nan")), block_size=B,
                                      backend="cpu_reference")
    # float64 attention restricted to the kept blocks, token by token
    tokens = torch.arange(n)
    allowed = mask[:, tokens[:, None] // B, tokens[None, :] // B] & (tokens[None, :] <= tokens[:, None])
    r = hq // hkv
    s = torch.einsum("ihd,jhd->hij", q.double(), k.double().repeat_interleave(r, 1)) / math.sqrt(D)
    p = torch.softmax(s.masked_fill(~allowed, -math.inf), dim=-1)
    want = torch.einsum("hij,jhd->ihd", p, v.double().repeat_interleave(r, 1))
    assert torch.linalg.norm(out.double() - want) / torch.linalg.norm(want) < 1e-5
    # and the library's own estimate, in the same layout and with the same density definition
    est, stats = proxyattn.estimate(q, k, block_size=B, backend="cpu_reference", return_stats=True)
    own = from_csr(est.row_offsets, est.col_indices, hq, nb)
    check_structure(own, hq, nb)
    assert density(own) == int(stats["kept_blocks"].sum()) / (hq * nb * (nb + 1) // 2)
