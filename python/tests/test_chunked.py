"""Queries fewer than keys (a chunk of a prompt against the keys already cached), through the
package's layouts: batched q [b, nq, h, d] with k, v [b, nk, h, d]; packed with cu_seqlens_k;
flash_attn_varlen_func's names. The oracle is the whole prompt's dense attention in float64
(python/tests/reference.py): a chunk's rows are the whole prompt's last rows."""
import numpy as np
import pytest

import reference
from reference import rel_err

import proxyattn

try:
    import torch
except ImportError:
    torch = None


def whole_and_chunks(rng, kv_lens, q_lens, hq=4, hkv=2, d=32):
    """The whole prompts (packed), their dense attention, and the chunk's packed queries."""
    cu_k = np.concatenate([[0], np.cumsum(kv_lens)]).tolist()
    cu_q = np.concatenate([[0], np.cumsum(q_lens)]).tolist()
    q = rng.standard_normal((cu_k[-1], hq, d)) * 2
    k, v = rng.standard_normal((cu_k[-1], hkv, d)), rng.standard_normal((cu_k[-1], hkv, d))
    out, lse = reference.attention(q, k, v, cu_k)
    rows = np.concatenate([np.arange(cu_k[s + 1] - q_lens[s], cu_k[s + 1]) for s in range(len(q_lens))]).astype(int)
    return dict(q=q[rows], k=k, v=v, cu_q=cu_q, cu_k=cu_k, out=out[rows], lse=lse[:, rows])


@pytest.mark.parametrize("backend", ["cpu", "cpu_reference"])
def test_packed_chunks_equal_the_whole_prompts_last_rows(backend):
    rng = np.random.default_rng(1)
    # a chunk inside a block, on a block edge, one query, no query, the whole prompt
    x = whole_and_chunks(rng, [300, 256, 77, 40, 90], [45, 128, 1, 0, 90])
    q, k, v = (x[n].astype(np.float32) for n in "qkv")
    out, lse = proxyattn.dense_attention(q, k, v, cu_seqlens=x["cu_q"], cu_seqlens_k=x["cu_k"], return_lse=True,
                                         backend=backend)
    assert rel_err(out, x["out"]) < 1e-5 and rel_err(lse, x["lse"]) < 1e-5
    out = proxyattn.attention_varlen(q, k, v, x["cu_q"], x["cu_k"], gamma=1.0, block_size=16, backend=backend)
    assert rel_err(out, x["out"]) < 1e-5  # gamma 1 keeps every causal block
    mask, stats = proxyattn.estimate(q, k, cu_seqlens=x["cu_q"], cu_seqlens_k=x["cu_k"], return_stats=True,
                                     gamma=0.5, block_size=16, min_budget_tokens=16, backend=backend)
    assert (stats["kept_blocks"] <= stats["causal_blocks"]).all() and 0 < stats["total_density"] < 1
    out = proxyattn.sparse_attention(q, k, v, mask, backend=backend)  # the mask knows both packings
    want = reference_chunk_sparse(x, mask)
    assert rel_err(out, want) < 1e-5


def reference_chunk_sparse(x, mask):
    """The whole prompt's attention restricted to the chunk's mask rows, at the chunk's rows."""
    k, v, cu_k = x["k"], x["v"], x["cu_k"]
    hq, d = x["q"].shape[1], x["q"].shape[2]
    out = np.zeros((len(x["q"]), hq, d))
    for s in range(len(cu_k) - 1):
        q_len = x["cu_q"][s + 1] - x["cu_q"][s]
        keep = mask.to_dense(s)  # [hq, nb, nb] over the keys' blocks
        n = cu_k[s + 1] - cu_k[s]
        for i in range(q_len):
            pos = n - q_len + i
            for h in range(hq):
                keys = [t for t in range(pos + 1) if keep[h, pos // mask.block_size, t // mask.block_size]]
                kvh = h // (hq // k.shape[1])
                sc = np.array([x["q"][x["cu_q"][s] + i, h] @ k[cu_k[s] + t, kvh] for t in keys]) / np.sqrt(d)
                p = np.exp(sc - sc.max())
                out[x["cu_q"][s] + i, h] = (p / p.sum()) @ v[[cu_k[s] + t for t in keys], kvh]
    return out


@pytest.mark.skipif(torch is None, reason="torch is not installed")
def test_batched_chunk_of_a_cached_prompt():
    rng = np.random.default_rng(2)
    x = whole_and_chunks(rng, [200, 200], [70, 70])
    q = torch.from_numpy(x["q"]).float().reshape(2, 70, 4, 32)
    k = torch.from_numpy(x["k"]).float().reshape(2, 200, 2, 32)
    v = torch.from_numpy(x["v"]).float().reshape(2, 200, 2, 32)
    out, lse = proxyattn.dense_attention(q, k, v, return_lse=True)
    assert out.shape == (2, 70, 4, 32) and lse.shape == (2, 4, 70)
    assert rel_err(out.reshape(140, 4, 32).numpy(), x["out"]) < 1e-5
    out = proxyattn.attention(q, k, v, gamma=1.0, block_size=32)
    assert rel_err(out.reshape(140, 4, 32).numpy(), x["out"]) < 1e-5
    # One packed sequence with fewer queries than keys needs no offsets at all.
    out = proxyattn.dense_attention(q[0], k[0], v[0])
    assert rel_err(out.numpy(), x["out"][:70]) < 1e-5


def test_chunk_errors_name_the_argument():
    rng = np.random.default_rng(3)
    q = rng.standard_normal((30, 4, 16)).astype(np.float32)
    k = rng.standard_normal((20, 2, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="k: has 20 tokens, fewer than q's 30"):
        proxyattn.dense_attention(q, k, k)
    with pytest.raises(ValueError, match="sequence 0 has 30 queries but 20 keys"):
        proxyattn.dense_attention(q, k, k, cu_seqlens=[0, 30], cu_seqlens_k=[0, 20])
    with pytest.raises(ValueError, match="cu_seqlens_k"):
        proxyattn.dense_attention(q[:10], k, k, cu_seqlens=[0, 5, 10], cu_seqlens_k=[0, 20])
    with pytest.raises(ValueError, match="max_seqlen_k"):
        proxyattn.attention_varlen(q[:10], k, k, [0, 10], [0, 20], max_seqlen_q=10, max_seqlen_k=12)
    with pytest.raises(ValueError, match="k must have shape"):
        proxyattn.estimate(q[:10], k, cu_seqlens=[0, 10], cu_seqlens_k=[0, 25])


def paged(rng, k, v, cu_k, page):
    """k, v packed [total, h, d] scattered into shuffled pages of `page` tokens (a spare page of
    NaN); the block table [num_seqs, max_pages] (unused entries -1)."""
    need = [-(-(b - a) // page) for a, b in zip(cu_k, cu_k[1:])]
    order = rng.permutation(sum(need) + 1).astype(np.int32)
    kc = np.full((sum(need) + 1, page) + k.shape[1:], np.nan, np.float32)
    vc = kc.copy()
    table = np.full((len(need), max(need) + 1), -1, np.int32)
    nxt = 0
    for s, n in enumerate(need):
        for i in range(n):
            table[s, i] = order[nxt]
            nxt += 1
        for t in range(cu_k[s + 1] - cu_k[s]):
            kc[table[s, t // page], t % page] = k[cu_k[s] + t]
            vc[table[s, t // page], t % page] = v[cu_k[s] + t]
    return kc, vc, table


@pytest.mark.parametrize("page", [16, 5, 128])
def test_kvcache_pages_give_the_contiguous_answer(page):
    rng = np.random.default_rng(5)
    x = whole_and_chunks(rng, [200, 150], [40, 40])
    q, k, v = (x[n].astype(np.float32) for n in "qkv")
    kc, vc, table = paged(rng, k, v, x["cu_k"], page)
    q4 = q.reshape(2, 40, 4, 32)
    lens = [200, 150]
    out = proxyattn.attention_with_kvcache(q4, kc, vc, lens, table, dense=True)
    assert out.shape == (2, 40, 4, 32) and rel_err(out.reshape(80, 4, 32), x["out"]) < 1e-5
    out, stats = proxyattn.attention_with_kvcache(q4, kc, vc, np.array(lens, np.int32), table, gamma=0.7,
                                                  block_size=16, min_budget_tokens=16, return_stats=True)
    want = proxyattn.attention_varlen(q, k, v, x["cu_q"], x["cu_k"], gamma=0.7, block_size=16, min_budget_tokens=16)
    assert np.isfinite(out).all() and rel_err(out.reshape(80, 4, 32), want) < 1e-6
    assert stats["total_density"] < 1
    bad = table.copy()
    bad[1, 0] = 99
    with pytest.raises(ValueError, match=r"block_table\[1\]\[0\] = 99"):
        proxyattn.attention_with_kvcache(q4, kc, vc, lens, bad)
    with pytest.raises(ValueError, match="cache_seqlens"):
        proxyattn.attention_with_kvcache(q4, kc, vc, [200], table)


@pytest.mark.parametrize("page", [16, 7])
def test_varlen_queries_over_pages(page):
    # flash_attn_varlen_func's block_table: queries of different lengths (a whole prompt, one token,
    # a chunk) over paged caches give the contiguous call's answer.
    rng = np.random.default_rng(8)
    x = whole_and_chunks(rng, [200, 150, 90], [40, 1, 90])
    q, k, v = (x[n].astype(np.float32) for n in "qkv")
    kc, vc, table = paged(rng, k, v, x["cu_k"], page)
    out = proxyattn.attention_varlen(q, kc, vc, x["cu_q"], x["cu_k"], block_table=table, dense=True)
    assert out.shape == q.shape and rel_err(out, x["out"]) < 1e-5
    opts = dict(gamma=0.7, block_size=16, min_budget_tokens=16)
    out, lse = proxyattn.attention_varlen(q, kc, vc, x["cu_q"], x["cu_k"], block_table=table, return_lse=True, **opts)
    want, want_lse = proxyattn.attention_varlen(q, k, v, x["cu_q"], x["cu_k"], return_lse=True, **opts)
    assert np.isfinite(out).all() and rel_err(out, want) < 1e-6 and rel_err(lse, want_lse) < 1e-6
    with pytest.raises(ValueError, match="cu_seqlens_k"):
        proxyattn.attention_varlen(q, kc, vc, x["cu_q"], x["cu_k"][:-1], block_table=table)


@pytest.mark.skipif(torch is None, reason="torch is not installed")
def test_torch_ops_take_the_keys_packing():
    import proxyattn.torch_ops as ops
    rng = np.random.default_rng(6)
    x = whole_and_chunks(rng, [120, 90], [30, 90])
    q, k, v = (torch.from_numpy(x[n]).float() for n in "qkv")
    out, lse = ops.dense_attention(q, k, v, cu_seqlens=x["cu_q"], cu_seqlens_k=x["cu_k"])
    assert out.shape == q.shape and lse.shape == (4, 120)
    assert rel_err(out.numpy(), x["out"]) < 1e-5 and rel_err(lse.numpy(), x["lse"]) < 1e-5
    out, _ = ops.attention(q, k, v, cu_seqlens=x["cu_q"], cu_seqlens_k=x["cu_k"], gamma=1.0, block_size=32)
    assert rel_err(out.numpy(), x["out"]) < 1e-5
    with pytest.raises(ValueError, match="cu_seqlens_k are only for packed"):
        ops.dense_attention(q[None], k[None], v[None], cu_seqlens_k=x["cu_k"])


@pytest.mark.skipif(torch is None or not torch.cuda.is_available(), reason="no CUDA GPU: the CUDA chunk test skips")
@pytest.mark.parametrize("page", [16, 128])
def test_chunks_and_pages_on_cuda(page):
    # flash_attn_varlen_func's and flash_attn_with_kvcache's layouts on the GPU kernels, against
    # the whole prompt's dense attention in float64; gamma 1 keeps every causal block.
    rng = np.random.default_rng(7)
    x = whole_and_chunks(rng, [1000, 600], [64, 64], hq=8, hkv=2, d=128)
    q, k, v = (torch.from_numpy(x[n]).to("cuda", torch.bfloat16) for n in "qkv")
    out = proxyattn.attention_varlen(q, k, v, x["cu_q"], x["cu_k"], gamma=1.0)
    assert rel_err(out.float().cpu().numpy(), x["out"]) < 2e-2
    out = proxyattn.attention_varlen(q, k, v, x["cu_q"], x["cu_k"], gamma=0.9)
    assert torch.isfinite(out).all() and rel_err(out.float().cpu().numpy(), x["out"]) < 0.2
    kc, vc, table = paged(rng, x["k"], x["v"], x["cu_k"], page)
    kc, vc = (torch.from_numpy(c).to("cuda", torch.bfloat16) for c in (kc, vc))
    q4 = q.reshape(2, 64, 8, 128)
    lens = torch.tensor([1000, 600], dtype=torch.int32, device="cuda")
    paged_out = proxyattn.attention_with_kvcache(q4, kc, vc, lens, torch.from_numpy(table).cuda(), gamma=0.9)
    assert torch.equal(paged_out.reshape(128, 8, 128), out)
    varlen_out = proxyattn.attention_varlen(q, kc, vc, x["cu_q"], x["cu_k"], block_table=torch.from_numpy(table).cuda(),
                                            gamma=0.9)
    assert torch.equal(varlen_out, out)
