"""Where the attention kernel's time goes: one dense call per shape under Nsight Compute, with the
pipe utilisations (tensor cores, the MUFU/XU pipe that computes exp2), issue activity and warp
stall reasons of the sparse attention kernel. Run it under ncu (the GPU session's ncu step):

    ncu --kernel-name regex:sparse_attention --launch-skip 2 --launch-count 1 \
        --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats \
        --section SchedulerStats --metrics sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,\
    sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active python3 bench/ncu_attention.py --shape 14 2 64

The first two calls warm up (plans, tensor maps); the third is profiled. --full-mask runs the
sparse kernel on a mask that keeps every causal block instead (the mask's index reads), --density P
on a random mask keeping the diagonal and each other causal block with probability P; --estimate
runs the estimator with the defaults instead (profile its stage 1 with --kernel-name
regex:stage1_sm90, and --section SourceCounters for the stalls per source line).
"""
import argparse

import torch

import proxyattn


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[14, 2, 64], metavar=("Q_HEADS", "KV_HEADS", "D"))
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--full-mask", action="store_true", help="sparse_attention on a mask of every causal block")
    ap.add_argument("--density", type=float, default=0.0,
                    help="sparse_attention on a random mask: the diagonal and each other causal block with this probability")
    ap.add_argument("--estimate", action="store_true", help="the estimator (the defaults) instead of attention")
    args = ap.parse_args()
    hq, hkv, d = args.shape
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(args.tokens, h, d, device="cuda", dtype=torch.bfloat16, generator=g) for h in (hq, hkv, hkv))
    call = lambda: proxyattn.dense_attention(q, k, v)  # noqa: E731
    if args.full_mask or args.density > 0:
        # keep[m, h, n]: head h's query block m computes key block n (CSR row m * hq + h, as the library's)
        nb = (args.tokens + 127) // 128
        m = torch.arange(nb, device="cuda")
        causal = m[None, None, :] <= m[:, None, None]
        if args.full_mask:
            keep = causal.expand(nb, hq, nb)
        else:
            keep = (torch.rand(nb, hq, nb, device="cuda", generator=g) < args.density) & causal
            keep |= m[None, None, :] == m[:, None, None]
        rows = keep.reshape(nb * hq, nb)
        row_offsets = torch.zeros(nb * hq + 1, dtype=torch.int64, device="cuda")
        row_offsets[1:] = rows.sum(-1).cumsum(0)
        col_indices = rows.nonzero()[:, 1].to(torch.int32)
        call = lambda: proxyattn.sparse_attention(q, k, v, (row_offsets, col_indices))  # noqa: E731
    if args.estimate:
        call = lambda: proxyattn.estimate(q, k, copy=False)  # noqa: E731
    for _ in range(args.calls):
        call()
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
