"""Checks that the block-mass recall of study_lib equals the library's: for a captured layer,
recall = mean over heads and rows of exp(lse_sparse - lse_dense) with proxyattn.dense_attention
and proxyattn.sparse_attention (CPU backend), for ProxyAttn's own mask (proxyattn.estimate,
gamma 0.95, proxy_groups 1 and 2, min_budget_tokens 0) and the XAttention-style mask matched to
density 0.3.

    python3 eval/study/check_recall.py /tmp/study/passkey_16384_d0.50 --layers 0 11
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") not in (HERE, ROOT)] + [ROOT, HERE]
import torch  # noqa: E402

import proxyattn  # noqa: E402
import study_lib as S  # noqa: E402
from eval.baselines import match_density, to_csr  # noqa: E402


def main():
    for capture_dir, layer, x in S.captured_layers(__doc__):
        q, k, v, scale = x["q"], x["k"], x["v"], x["scale"]
        n = q.shape[0]
        t0 = time.time()
        _, lse_d = proxyattn.dense_attention(q, k, v, scale, return_lse=True, backend="cpu")
        t1 = time.time()
        W, lse_w = S.cached_block_mass(capture_dir, layer, q, k, scale)
        print("layer %2d: dense (library) %.0f s; max |lse library - lse study_lib| = %.2e"
              % (layer, t1 - t0, float((lse_d - lse_w).abs().max())), flush=True)
        masks = {}
        for g in (1, 2):
            bm = proxyattn.estimate(q, k, scale, gamma=0.95, proxy_groups=g, min_budget_tokens=0, backend="cpu")
            masks["proxyattn g0.95 p%d" % g] = ((bm.row_offsets, bm.col_indices), torch.from_numpy(bm.to_dense()))
        m = match_density("xattention", 0.3, q, k, block_size=S.B)
        masks["xattention d0.3"] = (to_csr(m.mask), m.mask)
        for name, (csr, dense_mask) in masks.items():
            t2 = time.time()
            _, lse_s = proxyattn.sparse_attention(q, k, v, csr, scale, return_lse=True, backend="cpu")
            r_lse = float(torch.exp(lse_s - lse_d).nan_to_num(0.0).mean())
            print("  %-20s density %.4f  recall from LSE %.5f  from block mass %.5f  (sparse %.0f s)"
                  % (name, S.density(dense_mask), r_lse, S.recall(dense_mask, W, n), time.time() - t2), flush=True)


if __name__ == "__main__":
    main()
