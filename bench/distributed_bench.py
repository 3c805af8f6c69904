"""Context-parallel prefill over several processes: proxyattn.distributed.attention against dense
context-parallel attention (all-gather K and V, then torch SDPA of each rank's query chunks against
the keys before them, bottom-right causal) at the same zigzag sharding.

    python3 bench/distributed_bench.py --world 8 --tokens 262144 524288 1048576          # one process per GPU (NCCL)
    python3 bench/distributed_bench.py --world 2 --device cpu --tokens 2048 --heads 4 2   # gloo smoke run

One layer of Llama-3.1-8B's attention by default (32 q / 8 kv heads, D 128, bf16 on CUDA), on the
structured input of bench/chunked_prefill.py. Per length and method: the slowest rank's time (each
call between barriers, best of --repeats), and for ProxyAttn the share of it spent in the
all-gathers of keys, values and query rows (timed alone, the same collectives), and the density.
"""
import argparse
import json
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chunked_prefill import structured  # noqa: E402

from proxyattn import DEFAULTS, distributed as pad  # noqa: E402


def timed(fn, repeats, device):
    best, out = float("inf"), None
    for _ in range(repeats):
        dist.barrier()
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        dist.barrier()
        best = min(best, time.perf_counter() - t0)
    return best, out


def dense_cp(q, k, v, n, rank, world):
    """Dense context parallelism: all-gather K and V, then each query chunk against its keys."""
    counts = pad.shard_sizes(n, world)
    k_full = pad.zigzag_unshard(pad._gather(k, counts, None))
    v_full = pad.zigzag_unshard(pad._gather(v, counts, None))
    outs, done, g = [], 0, q.shape[1] // k.shape[1]
    for a, e in pad.zigzag_chunks(n, rank, world):
        if e == a:
            continue
        qc = q[done:done + e - a].transpose(0, 1)[None]
        kc = k_full[:e].repeat_interleave(g, dim=1).transpose(0, 1)[None]
        vc = v_full[:e].repeat_interleave(g, dim=1).transpose(0, 1)[None]
        mask = causal_lower_right(e - a, e)  # bottom-right causal, not materialised on the flash path
        outs.append(F.scaled_dot_product_attention(qc, kc, vc, attn_mask=mask)[0].transpose(0, 1))
        done += e - a
    return torch.cat(outs)


def gathers_only(q, k, v, n, rank, world, stride, block):
    """The collectives of proxyattn.distributed.attention alone."""
    counts = pad.shard_sizes(n, world)
    pad._gather(k, counts, None)
    pad._gather(v, counts, None)
    wanted = [pad.estimator_rows(n, r, world, stride, block) for r in range(world)]
    pad._gather(q[: len(wanted[rank])], [len(w) for w in wanted], None)


def run(rank, world, port, args, results):
    device = args.device
    if device == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    hq, hkv = args.heads
    rows = []
    for n in args.tokens:
        q, k, v = structured(n, hq, hkv, args.dim, 0, dtype, "cpu")
        q, k, v = (pad.zigzag_shard(x, rank, world).to(device).contiguous() for x in (q, k, v))
        opts = {} if args.min_budget_tokens is None else dict(min_budget_tokens=args.min_budget_tokens)
        t_sparse, (_, mask) = timed(lambda: pad.attention(q, k, v, return_mask=True, **opts), args.repeats, device)
        t_comm, _ = timed(lambda: gathers_only(q, k, v, n, rank, world, DEFAULTS['stride'], DEFAULTS['block_size']), args.repeats, device)
        t_dense, _ = timed(lambda: dense_cp(q, k, v, n, rank, world), args.repeats, device) if not args.no_dense \
            else (float("nan"), None)
        kept = int(torch.as_tensor(mask.row_offsets)[-1])
        nb = -(-n // 128)
        rows.append(dict(tokens=n, world=world, proxyattn_s=t_sparse, gathers_s=t_comm, dense_s=t_dense,
                         density=kept / (hq * nb * (nb + 1) // 2)))
    gathered = [None] * world
    dist.all_gather_object(gathered, rows)
    if rank == 0:
        worst = [{**r, **{m: max(g[i][m] for g in gathered) for m in ("proxyattn_s", "gathers_s", "dense_s")}}
                 for i, r in enumerate(rows)]
        results.extend(worst)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=int, default=torch.cuda.device_count() or 2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--tokens", type=int, nargs="+", default=[262144])
    ap.add_argument("--heads", type=int, nargs=2, default=[32, 8], metavar=("Q", "KV"))
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-budget-tokens", type=int)
    ap.add_argument("--no-dense", action="store_true", help="leave out the dense baseline")
    ap.add_argument("--json")
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().list()
    mp.spawn(run, args=(args.world, port, args, results), nprocs=args.world, join=True)
    print(f"{args.world} ranks on {args.device}, {args.heads[0]} q / {args.heads[1]} kv heads, D {args.dim}")
    print("| tokens | ProxyAttn | of it, all-gathers | density | dense context-parallel | speed-up |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['tokens']} | {r['proxyattn_s'] * 1e3:.1f} ms | {r['gathers_s'] / r['proxyattn_s']:.0%} | "
              f"{r['density']:.1%} | {r['dense_s'] * 1e3:.1f} ms | {r['dense_s'] / r['proxyattn_s']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), torch=torch.__version__, rows=list(results)), f, indent=1)


if __name__ == "__main__":
    main()
