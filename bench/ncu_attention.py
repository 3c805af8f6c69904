"""Where the attention kernel's time goes: one dense call per shape under Nsight Compute, with the
pipe utilisations (tensor cores, the MUFU/XU pipe that computes exp2), issue activity and warp
stall reasons of the sparse attention kernel. Run it under ncu (the GPU session's ncu step):

    ncu --kernel-name regex:sparse_attention --launch-skip 2 --launch-count 1 \
        --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats \
        --section SchedulerStats --metrics sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,\
    sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active python3 bench/ncu_attention.py --shape 14 2 64

The first two calls warm up (plans, tensor maps); the third is profiled.
"""
import argparse

import torch

import proxyattn


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[14, 2, 64], metavar=("Q_HEADS", "KV_HEADS", "D"))
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--calls", type=int, default=3)
    args = ap.parse_args()
    hq, hkv, d = args.shape
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(args.tokens, h, d, device="cuda", dtype=torch.bfloat16, generator=g) for h in (hq, hkv, hkv))
    for _ in range(args.calls):
        proxyattn.dense_attention(q, k, v)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
