"""One gamma for all layers, as the library is used: mean density and recall over the captured
layers for the default (proxy_groups 1, row_ratio) and the recommended settings
(proxy_groups = Hkv = 2, budget_mode last_row_count), through proxyattn.estimate itself
(CPU backend, min_budget_tokens 0) and the block masses cached by analyze.py.

    python3 eval/study/fixed_gamma.py /tmp/study/passkey_16384_d0.50 /tmp/study/niah_multikey_16384_d0.50
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch  # noqa: E402

import proxyattn  # noqa: E402
import study_lib as S  # noqa: E402

SETTINGS = [("p1 row_ratio (default)", 1, "row_ratio", (0.9, 0.95, 0.97)),
            ("p2 row_ratio", 2, "row_ratio", (0.9, 0.95)),
            ("p2 last_row_count", 2, "last_row_count", (0.8, 0.85, 0.88, 0.9, 0.92))]


def main():
    torch.set_grad_enabled(False)
    acc = {}
    for d in sys.argv[1:]:
        for layer in range(24):
            x = S.load_layer(d, layer)
            q, k, scale = x["q"], x["k"], x["scale"]
            W, _ = S.cached_block_mass(d, layer, q, k, scale)
            for name, g, mode, gammas in SETTINGS:
                for gamma in gammas:
                    bm = proxyattn.estimate(q, k, scale, gamma=gamma, proxy_groups=g, budget_mode=mode,
                                            min_budget_tokens=0, backend="cpu")
                    mask = torch.from_numpy(bm.to_dense())
                    acc.setdefault((name, gamma), []).append((S.density(mask), S.recall(mask, W, q.shape[0])))
    print("| settings | gamma | mean density | mean recall | min recall (layer-prompt) |")
    print("|---|---|---|---|---|")
    for (name, gamma), v in acc.items():
        print("| %s | %.2f | %.3f | %.3f | %.3f |" % (name, gamma, sum(a for a, _ in v) / len(v),
                                                     sum(b for _, b in v) / len(v), min(b for _, b in v)))


if __name__ == "__main__":
    main()
