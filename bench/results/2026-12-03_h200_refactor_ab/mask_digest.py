"""Digests of the estimated masks and of the outputs of one library build (the C ABI through
python/proxyattn_ctypes.py, PROXYATTN_LIB), for comparing two builds bit for bit:

    PROXYATTN_LIB=old/libproxyattn_c.so python3 mask_digest.py > old.txt
    PROXYATTN_LIB=new/libproxyattn_c.so python3 mask_digest.py > new.txt && diff old.txt new.txt

Shapes: Llama-3.1-8B (32/8 heads, D 128) at 32K and 128K, Gemma-2-9B (16/8, D 256) at 16K, the
evaluation model (14/2, D 64, fp16) on a ragged batch, Qwen2.5-7B (28/4, D 128) at gamma 1."""
import hashlib
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "python"))
import proxyattn_ctypes as pa  # noqa: E402

CASES = [  # name, q heads, kv heads, D, dtype, lengths, config
    ("llama-32k", 32, 8, 128, torch.bfloat16, [32768], {}),
    ("llama-128k", 32, 8, 128, torch.bfloat16, [131072], {}),
    ("gemma-16k", 16, 8, 256, torch.bfloat16, [16384], {}),
    ("qwen0.5b-batch", 14, 2, 64, torch.float16, [5000, 300, 12000, 1], {}),
    ("qwen7b-gamma1", 28, 4, 128, torch.bfloat16, [9000], {"gamma": 1.0}),
]


def digest(*tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


for name, hq, hkv, d, dtype, lengths, cfg in CASES:
    g = torch.Generator(device="cuda").manual_seed(7)
    n = sum(lengths)
    # Structure that makes masks sparse: each query leans towards the key 0-63 tokens before it.
    k = torch.randn(n, hkv, d, device="cuda", generator=g)
    v = torch.randn(n, hkv, d, device="cuda", generator=g)
    near = (torch.arange(n, device="cuda") - torch.randint(0, 64, (n,), device="cuda", generator=g)).clamp(min=0)
    q = 0.1 * torch.randn(n, hq, d, device="cuda", generator=g) + 2 * k[near].repeat_interleave(hq // hkv, dim=1)
    q, k, v = (x.to(dtype) for x in (q, k, v))
    cu = [0]
    for m in lengths:
        cu.append(cu[-1] + m)
    with pa.Plan(hq, hkv, d, dtype, "cuda", cu, **cfg) as plan:
        e = plan.estimate(q, k)
        out = torch.empty_like(q)
        plan.sparse_attention(q, k, v, e["row_offsets"], e["col_indices"], out)
        torch.cuda.synchronize()
        density = e["col_indices"].numel() / plan.mask_capacity
        print(f"{name}: mask {digest(e['row_offsets'], e['col_indices'])} out {digest(out)} density {density:.4f}",
              flush=True)
