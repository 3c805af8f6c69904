"""The torch custom ops: opcheck (schema, fake tensors, autograd registration), torch.compile with
fullgraph, CUDA-graph capture and replay, and the errors raised while tracing."""
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: the torch op tests skip")
import proxyattn  # noqa: E402
import proxyattn.torch_ops as ops  # noqa: E402

HAS_CUDA = torch.cuda.is_available() and proxyattn.cuda_available()
DEVICES = [pytest.param(("cpu", torch.float32), id="cpu"),
           pytest.param(("cuda", torch.bfloat16), id="cuda",
                        marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU: CUDA cases skipped"))]


def inputs(device, dtype, shape=(1, 300, 4, 2, 64), seed=0):
    g = torch.Generator().manual_seed(seed)
    b, n, hq, hkv, d = shape
    q, k, v = (torch.randn(b, n, h, d, generator=g).to(device, dtype) for h in (hq, hkv, hkv))
    return q, k, v


@pytest.mark.parametrize("case", DEVICES)
def test_opcheck(case):
    q, k, v = inputs(*case)
    options = "gamma=0.3,min_budget_tokens=0,exact_last_block=True,head_columns=2"
    torch.library.opcheck(torch.ops.proxyattn.attention.default, (q, k, v, None, None, 0.0, options))
    torch.library.opcheck(torch.ops.proxyattn.dense_attention.default, (q, k, v, None, None, 0.0))
    packed = [x[0] for x in (q, k, v)]
    options = ops.encode_options(proxyattn.Options(proxy_groups=2, keep_sink=False, budget_mode="last_row_count"))
    assert ops.decode_options(options)["keep_sink"] is False
    torch.library.opcheck(torch.ops.proxyattn.attention.default, (*packed, [0, 100, 300], None, 0.1, options))
    # A chunk of 50 queries, the last positions of one 300-key sequence.
    torch.library.opcheck(torch.ops.proxyattn.dense_attention.default, (packed[0][:50], *packed[1:], [0, 50], [0, 300], 0.0))
    mask = proxyattn.estimate(*packed[:2], cu_seqlens=[0, 100, 300], gamma=0.3, min_budget_tokens=0)
    torch.library.opcheck(torch.ops.proxyattn.sparse_attention.default,
                          (*packed, mask.row_offsets, mask.col_indices, [0, 100, 300], None, 0.0, 128))


@pytest.mark.parametrize("case", DEVICES)
def test_compile_fullgraph_matches_eager(case):
    q, k, v = inputs(*case)

    def layer(q, k, v):
        out, lse = ops.attention(q, k, v, gamma=0.3, min_budget_tokens=0)
        return out * 2.0, lse + 1.0  # elementwise ops that round the same way compiled

    # and in transformers' layout, [b, h, n, d] transposed: the op's outputs are contiguous whatever
    # q's strides, as its fake implementation must say (inductor checks the strides it reads).
    views = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v)]
    for args in ((q, k, v), views):
        eager = layer(*args)
        compiled = torch.compile(layer, fullgraph=True, dynamic=False)(*args)
        for a, b in zip(eager, compiled):
            assert torch.equal(a, b)


def paged_inputs(device, dtype, b=2, n=50, kv=300, page=16, seed=0):
    """q [b, n, 4, 64]: the last n of each sequence's kv keys, which sit in shuffled pages of a cache
    with one spare page."""
    g = torch.Generator().manual_seed(seed)
    pages = -(-kv // page)
    q = torch.randn(b, n, 4, 64, generator=g).to(device, dtype)
    k_cache, v_cache = (torch.randn(b * pages + 1, page, 2, 64, generator=g).to(device, dtype) for _ in range(2))
    table = torch.randperm(b * pages + 1, generator=g)[: b * pages].view(b, pages).to(device, torch.int32)
    return q, k_cache, v_cache, [kv] * b, table


@pytest.mark.parametrize("case", DEVICES)
def test_paged_op(case):
    q, k_cache, v_cache, lens, table = paged_inputs(*case)
    options = ops.encode_options(proxyattn.Options(gamma=0.5, min_budget_tokens=0))
    for dense in (False, True):
        torch.library.opcheck(torch.ops.proxyattn.attention_with_kvcache.default,
                              (q, k_cache, v_cache, lens, table, None, 0.0, options, dense))
    # packed queries of different lengths: 50 and 7 of the two sequences' last positions
    packed = torch.cat([q[0], q[1, -7:]])
    torch.library.opcheck(torch.ops.proxyattn.attention_with_kvcache.default,
                          (packed, k_cache, v_cache, lens, table, [0, 50, 57], 0.0, options, False))
    got, _ = ops.attention_with_kvcache(packed, k_cache, v_cache, lens, table, cu_seqlens_q=[0, 50, 57], gamma=0.5,
                                        min_budget_tokens=0)
    cu_k = [0, lens[0], lens[0] + lens[1]]
    assert torch.equal(got, proxyattn.attention_varlen(packed, k_cache, v_cache, [0, 50, 57], cu_k, block_table=table,
                                                       gamma=0.5, min_budget_tokens=0))
    with pytest.raises(ValueError, match="cu_seqlens_q"):
        ops.attention_with_kvcache(packed, k_cache, v_cache, lens, table)

    def layer(q, k_cache, v_cache, table):
        out, lse = ops.attention_with_kvcache(q, k_cache, v_cache, lens, table, gamma=0.5, min_budget_tokens=0)
        return out * 2.0, lse + 1.0

    compiled = torch.compile(layer, fullgraph=True, dynamic=False)(q, k_cache, v_cache, table)
    want, want_lse = proxyattn.attention_with_kvcache(q, k_cache, v_cache, lens, table, return_lse=True, gamma=0.5,
                                                      min_budget_tokens=0)
    assert torch.equal(compiled[0], want * 2.0) and torch.equal(compiled[1], want_lse + 1.0)
    dense, _ = ops.attention_with_kvcache(q, k_cache, v_cache, lens, table, dense=True)
    assert torch.equal(dense, proxyattn.attention_with_kvcache(q, k_cache, v_cache, lens, table, dense=True))
    with pytest.raises(ValueError, match="block_table"):
        ops.attention_with_kvcache(q, k_cache, v_cache, lens, table.long())


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU: the CUDA-graph test skips")
def test_cuda_graph_capture_and_replay():
    q, k, v = inputs("cuda", torch.bfloat16, (1, 2000, 8, 2, 128))
    static = [x.clone() for x in (q, k, v)]
    ops.attention(*static, gamma=0.5, min_budget_tokens=0)  # warm-up: builds the plan
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, lse = ops.attention(*static, gamma=0.5, min_budget_tokens=0)
    q2, k2, v2 = inputs("cuda", torch.bfloat16, (1, 2000, 8, 2, 128), seed=1)
    for s, x in zip(static, (q2, k2, v2)):
        s.copy_(x)
    graph.replay()
    torch.cuda.synchronize()
    ref, ref_lse = ops.attention(q2, k2, v2, gamma=0.5, min_budget_tokens=0)
    assert torch.equal(out, ref) and torch.equal(lse, ref_lse)


def test_errors_while_tracing():
    q, k, v = inputs("cpu", torch.float32)
    f = torch.compile(lambda q, k, v: ops.attention(q, k, v)[0], fullgraph=True)
    with pytest.raises(Exception, match="dtype"):
        f(q, k.double(), v)
    with pytest.raises(Exception, match="last dimension"):
        f(q, k.transpose(2, 3).contiguous().transpose(2, 3), v)
    with pytest.raises(ValueError, match="cu_seqlens"):
        ops.attention(q, k, v, cu_seqlens=[0, 300])


def test_a_program_that_used_the_op_exits_quietly(tmp_path):
    # torch.compile keeps the op's functions alive to the end; nothing may be printed at exit.
    script = tmp_path / "use_op.py"
    script.write_text(
        "import torch, proxyattn, proxyattn.torch_ops as ops\n"
        "dev, dt = ('cuda', torch.bfloat16) if torch.cuda.is_available() and proxyattn.cuda_available() else ('cpu', torch.float32)\n"
        "q, k = torch.randn(1, 300, 4, 64, device=dev, dtype=dt), torch.randn(1, 300, 2, 64, device=dev, dtype=dt)\n"
        "f = torch.compile(lambda q, k, v: ops.attention(q, k, v)[0], fullgraph=True)\n"
        "print(tuple(f(q, k, k).shape))\n")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "(1, 300, 4, 64)"
    assert run.stderr == "", run.stderr
