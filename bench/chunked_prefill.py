"""Prefill against a KV cache: a prompt prefilled in chunks (each chunk's queries against every key
before them) against one call on the whole prompt, and paged keys and values against contiguous.

    python3 bench/chunked_prefill.py --tokens 16384 --chunks 4096 8192 --page-sizes 16 128 256 --json out.json

For each chunk size: the total time of the chunks' calls (estimate and attention), the kept density
over all their rows, and the output against the one-call output and against dense attention (the
last chunk keeps the one-call mask in its whole blocks; earlier chunks budget from their own last
queries). For each page size (and page order): one call on the whole prompt with the keys and values in
pages, against contiguous, and dense attention through the same pages (the attention kernel's
share of the cost) against dense on contiguous keys. The input has structure (each query leans towards a few earlier keys),
so that the masks are sparse. Times are of the calls alone (the densities come from a separate,
untimed run), best of --repeats rounds in which every mode runs once in turn, the plans cached.
"""
import argparse
import json
import time

import torch

import proxyattn


def structured(n, hq, hkv, d, seed, dtype, device, focus=1.0):
    """q, k, v [n, h, d]: random keys and values; each query leans towards its kv head's keys at a
    few fixed "hot" positions (as sinks and retrieved facts draw attention) and towards one of the
    64 keys just before it (locality), so that the attention of most blocks is small. `focus`
    scales both pulls: lower spreads the attention (denser masks)."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(n, hkv, d, generator=g)
    v = torch.randn(n, hkv, d, generator=g)
    q = torch.randn(n, hq, d, generator=g) * 0.1
    kv_of = torch.arange(hq) // (hq // hkv)
    hot = (torch.rand(8, generator=g) * n).long()
    pos = torch.arange(n).view(n, 1)
    for j in hot.tolist():  # a hot key pulls only the queries after it
        q += 0.375 * focus * (pos >= j).unsqueeze(-1) * k[j, kv_of].unsqueeze(0)
    near = (pos - (torch.rand(n, hq, generator=g) * 64).long()).clamp(min=0)
    q += 2.0 * focus * k[near, kv_of.view(1, hq)]
    return (x.to(device=device, dtype=dtype) for x in (q, k, v))


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_rounds(fns, repeats):
    """Best time of each callable over `repeats` rounds, one call of each per round in turn, so that
    every mode meets the board in the same states (a GPU's clocks drop after a long dense run: timed
    one mode after another, a mode that follows a dense run loses several percent)."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def paged(k, v, page, seed, shuffled=True):
    """k, v [n, h, d] as caches of pages [pages + 1, page, h, d] and the table [1, pages]: the pages
    in random order (as a serving engine's pool hands them out after a while), or in order."""
    n = k.shape[0]
    pages = -(-n // page)
    if shuffled:
        order = torch.randperm(pages + 1, generator=torch.Generator().manual_seed(seed))[:pages].to(torch.int32)
    else:
        order = torch.arange(pages, dtype=torch.int32)
    kc = torch.zeros((pages + 1, page) + tuple(k.shape[1:]), dtype=k.dtype, device=k.device)
    vc = torch.zeros_like(kc)
    pad = pages * page - n
    kc[order.long()] = torch.nn.functional.pad(k, (0, 0, 0, 0, 0, pad)).view(pages, page, *k.shape[1:])
    vc[order.long()] = torch.nn.functional.pad(v, (0, 0, 0, 0, 0, pad)).view(pages, page, *k.shape[1:])
    return kc, vc, order.view(1, pages).to(k.device)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--chunks", type=int, nargs="*", default=[4096, 8192])
    ap.add_argument("--page-sizes", type=int, nargs="*", default=[16, 128, 256])
    ap.add_argument("--page-orders", nargs="*", default=["shuffled"], choices=["shuffled", "in-order"],
                    help="pages in random order in the cache, or one after another (locality's share)")
    ap.add_argument("--heads", type=int, nargs=2, default=[8, 2], metavar=("Q", "KV"))
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--focus", type=float, default=1.0, help="how peaked the input's attention is (lower: denser masks)")
    ap.add_argument("--min-budget-tokens", type=int, help="the heads' budget floor (default: the library's)")
    ap.add_argument("--json")
    args = ap.parse_args()

    n, (hq, hkv), d = args.tokens, args.heads, args.dim
    q, k, v = structured(n, hq, hkv, d, 0, getattr(torch, args.dtype), args.device, args.focus)
    opts = {} if args.min_budget_tokens is None else dict(min_budget_tokens=args.min_budget_tokens)
    # Every mode: (row, the timed call); each is run once untimed first (plans, outputs, densities).
    modes, out = [], None
    dense = proxyattn.dense_attention(q, k, v)
    modes.append((dict(mode="dense", density=1.0, error_vs_dense=0.0), lambda: proxyattn.dense_attention(q, k, v)))
    one, stats = proxyattn.attention(q, k, v, return_stats=True, **opts)
    one_density = float(stats["total_density"])
    modes.append((dict(mode="one call", density=one_density, error_vs_dense=rel(one, dense)),
                  lambda: proxyattn.attention(q, k, v, **opts)))
    for c in args.chunks:
        if c >= n:
            continue

        def chunked(stats=False, c=c):
            outs, kept, causal = [], 0, 0
            for start in range(0, n, c):
                end = min(n, start + c)
                if not stats:
                    outs.append(proxyattn.attention(q[start:end], k[:end], v[:end], **opts))
                    continue
                o, st = proxyattn.attention(q[start:end], k[:end], v[:end], return_stats=True, **opts)
                outs.append(o)
                kept, causal = kept + int(st["kept_blocks"].sum()), causal + int(st["causal_blocks"].sum())
            return torch.cat(outs), kept / max(causal, 1)

        out, density = chunked(stats=True)
        modes.append((dict(mode=f"chunks of {c}", density=density, error_vs_dense=rel(out, dense),
                           error_vs_one_call=rel(out, one)), chunked))
    for page, order in ((p, o) for o in args.page_orders for p in args.page_sizes):
        kc, vc, table = paged(k, v, page, page, shuffled=order == "shuffled")
        pages = f"pages of {page}" + (" in order" if order == "in-order" else "")

        def on_pages(dense=False, kc=kc, vc=vc, table=table):
            if dense:  # the attention kernel alone: dense attention through the pages
                return proxyattn.attention_with_kvcache(q[None], kc, vc, [n], table, dense=True)
            return proxyattn.attention_with_kvcache(q[None], kc, vc, [n], table, **opts)

        out = on_pages()
        modes.append((dict(mode=f"paged, {pages}", density=one_density, error_vs_dense=rel(out[0], dense),
                           error_vs_one_call=rel(out[0], one)), on_pages))
        out = on_pages(dense=True)
        modes.append((dict(mode=f"dense, {pages}", density=1.0, error_vs_dense=rel(out[0], dense)),
                      lambda on_pages=on_pages: on_pages(dense=True)))
    out = None  # free the last output before timing
    times = timed_rounds([fn for _, fn in modes], args.repeats)
    rows = []
    for (row, _), t in zip(modes, times):
        row["seconds"] = t
        rows.append(row)
    t_one, t_dense = rows[1]["seconds"], rows[0]["seconds"]
    for r in rows[2:]:
        if r["mode"].startswith("dense,"):
            r["time_vs_dense"] = r["seconds"] / t_dense
        else:
            r["time_vs_one_call"] = r["seconds"] / t_one

    print(f"{n} tokens, {hq} q / {hkv} kv heads, D {d}, {args.dtype} on {args.device}, focus {args.focus}, "
          f"min_budget_tokens {args.min_budget_tokens or 'default'}")
    print("| mode | time | vs one call | vs dense | density | error vs dense | error vs one call |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['seconds'] * 1e3:.1f} ms | {r['seconds'] / t_one:.3f}x | {r['seconds'] / t_dense:.3f}x | "
              f"{r['density']:.1%} | {r['error_vs_dense']:.4f} | {r.get('error_vs_one_call', 0.0):.2e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(tokens=n, heads=[hq, hkv], dim=d, dtype=args.dtype, device=args.device, focus=args.focus,
                           min_budget_tokens=args.min_budget_tokens,
                           torch=torch.__version__, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
