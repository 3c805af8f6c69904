"""Checks the Python mirror of stages 1-3 (study_lib) against the library: proxyattn.estimate
(CPU backend) must give the same block mask for the same options, on captured layers.

    python3 eval/study/check_mirror.py /tmp/study/passkey_16384_d0.50 --layers 0 11
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch  # noqa: E402

import proxyattn  # noqa: E402
import study_lib as S  # noqa: E402


def main():
    for _, layer, x in S.captured_layers(__doc__):
        q, k = x["q"], x["k"]
        scale = x["scale"]
        n, hq, _ = q.shape
        nb = S.ceil_div(n, S.B)
        a = S.stage2_mass(q, k, scale)
        for groups, stride in ((1, 4), (2, 4), (1, 1), (2, 8)):
            pos = S.rank_positions(S.proxy_scores(q, k, scale, groups, stride))
            hg = S.head_groups(hq, k.shape[1], groups)
            for gamma in (0.5, 0.9, 0.95):
                for mode in ("row_ratio", "last_row_count"):
                    mine = S.mask_from_counts(pos, hg, S.row_counts(S.budget_blocks(a, gamma), nb, mode=mode)).numpy()
                    bm, st = proxyattn.estimate(q, k, scale, gamma=gamma, proxy_groups=groups, stride=stride,
                                                min_budget_tokens=0, keep_sink=True, budget_mode=mode,
                                                backend="cpu", return_stats=True)
                    lib = bm.to_dense()
                    kh = S.budget_blocks(a, gamma).numpy()
                    diff = int((mine != lib).sum())
                    print("layer %2d p%d s%d gamma %.2f %-14s density lib %.4f mirror %.4f, blocks differing %d "
                          "of %d; budgets equal: %s" % (layer, groups, stride, gamma, mode, st["total_density"],
                                                        S.density(torch.from_numpy(mine)), diff, int(lib.sum()),
                                                        bool((st["budget_blocks"][0] == kh).all())), flush=True)


if __name__ == "__main__":
    main()
