"""proxyattn.distributed on 1 to 4 CPU processes (gloo): every rank's output and log-sum-exp equal
the single-process call's at its positions, the mask is the single-process mask, uneven shards and
fewer tokens than chunks work, and shapes that disagree across ranks are errors on every rank
(no hang)."""
import os
import socket
import tempfile
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import proxyattn
from proxyattn import distributed as pad

CASES = [  # tokens, q heads, kv heads, dim, options
    (1000, 8, 2, 32, dict(min_budget_tokens=128, gamma=0.8)),
    (777, 4, 4, 64, dict(min_budget_tokens=128, stride=8, exact_last_block=False)),
    (300, 7, 1, 32, dict(min_budget_tokens=0, gamma=0.5, block_size=64)),
    (5, 4, 2, 32, {}),
]


def structured(n, hq, hkv, d, seed):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(n, hkv, d, generator=g)
    v = torch.randn(n, hkv, d, generator=g)
    near = (torch.arange(n) - torch.randint(0, 64, (n,), generator=g)).clamp(min=0)
    q = 0.1 * torch.randn(n, hq, d, generator=g) + 2 * k[near].repeat_interleave(hq // hkv, dim=1)
    return q, k, v


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rank(rank, world, port, errors):
    torch.set_num_threads(1)  # up to 4 ranks share the machine's cores
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        for i, (n, hq, hkv, d, opts) in enumerate(CASES):
            q, k, v = structured(n, hq, hkv, d, i)
            want, want_lse = proxyattn.attention(q, k, v, return_lse=True, **opts)
            want_mask = proxyattn.estimate(q, k, **opts)
            shard = [pad.zigzag_shard(x, rank, world) for x in (q, k, v)]
            out, lse, mask = pad.attention(*shard, return_lse=True, return_mask=True, **opts)
            assert torch.equal(torch.as_tensor(mask.row_offsets), torch.as_tensor(want_mask.row_offsets)), n
            assert torch.equal(torch.as_tensor(mask.col_indices), torch.as_tensor(want_mask.col_indices)), n
            assert out.shape == shard[0].shape
            torch.testing.assert_close(out, pad.zigzag_shard(want, rank, world), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(lse, pad.zigzag_shard(want_lse, rank, world, dim=1), rtol=1e-5, atol=1e-5)
        # Every rank sees the same error when one rank's heads differ.
        q, k, v = structured(200, 4, 2, 32, 9)
        shard = [pad.zigzag_shard(x, rank, world) for x in (q, k, v)]
        if rank == world - 1:
            shard = [shard[0][:, :2], shard[1][:, :1], shard[2][:, :1]]
        if world > 1:
            with pytest.raises(ValueError, match="ranks disagree"):
                pad.attention(*shard)
        # Rank 0's shard two tokens too long: not the zigzag shards of any sequence (every rank
        # says so; one process holds any sequence).
        q, k, v = structured(300, 4, 2, 32, 10)
        shard = [pad.zigzag_shard(x, rank, world) for x in (q, k, v)]
        if rank == 0:
            shard = [torch.cat([x, x[:2]]) for x in shard]
        if world > 1:
            with pytest.raises(ValueError, match="zigzag shard"):
                pad.attention(*shard)
        dist.destroy_process_group()
    except BaseException:  # reported to the parent, which fails the test with it
        errors[rank] = traceback.format_exc()


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_context_parallel_equals_one_process(world):
    # The ranks are forked from a server that imported torch and proxyattn and ran nothing: no
    # thread pool to inherit, and no rank spends a second importing torch again (spawn's cost).
    mp.set_forkserver_preload(["torch", "torch.distributed", "proxyattn", "pytest"])
    errors = mp.Manager().dict()
    mp.start_processes(run_rank, args=(world, free_port(), errors), nprocs=world, join=True,
                       start_method="forkserver")
    assert not errors, "\n".join(f"rank {r}:\n{e}" for r, e in sorted(errors.items()))


def test_zigzag_shards_join_and_balance():
    x = torch.arange(1001)
    for world in (1, 2, 3, 8):
        shards = [pad.zigzag_shard(x, r, world) for r in range(world)]
        assert torch.equal(pad.zigzag_unshard(shards), x)
        assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 2


def test_errors_without_a_process_group():
    q, k, v = structured(100, 4, 2, 32, 0)
    with pytest.raises(RuntimeError, match="not initialized"):
        pad.attention(q, k, v)
    with pytest.raises(ValueError, match="same positions"):
        pad._check_shapes(q, k[:50], v[:50])
    with pytest.raises(ValueError, match="dtype"):
        pad._check_shapes(q, k.double(), v.double())
