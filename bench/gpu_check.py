"""Correctness of the CUDA backend against independent implementations (DESIGN.md section 3).

For bf16 and fp16, head dims 64/128/256, GQA ratios 1/4/8, single sequences whose lengths are
not multiples of the block size and a packed ragged batch:
  dense     ours dense_attention vs torch SDPA (math backend, float32, per sequence); LSE vs
            torch.logsumexp of the float32 causal scores
  sparse    ours sparse_attention on a random block mask (some rows keep nothing) vs a float32
            torch attention with the same mask expanded to tokens
  gamma1    gamma = 1 keeps every causal block, and its attention equals our dense output
  estimate  estimate() with sparse options: a well-formed mask (causal, ascending, forced blocks
            kept); attention() with the same options keeps as many blocks per head as that mask
            (its stats), and its output equals the float32 reference on that mask
Every output is filled with NaN before each run and must come back finite (LSE: -inf only for
rows that keep nothing): out is passed in NaN-filled, and the arrays the package allocates (the
LSE) come from torch.empty while torch fills uninitialised memory with NaN (deterministic mode,
torch.utils.deterministic.fill_uninitialized_memory). One line per check; exit status 1 if any
check fails.

  python3 bench/gpu_check.py [--quick] [--ours-device cpu]

Ours is the installed proxyattn package (with its CUDA backend for --ours-device cuda).
--ours-device cpu runs the package's CPU backend on host copies instead, which checks this script
itself on a build without the CUDA backend; without a GPU the inputs and references are on the
CPU too.
"""
import argparse
import contextlib
import sys
import traceback

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import proxyattn

BLOCK = 128
TOL = 1e-2      # relative norm error of bf16/fp16 outputs
LSE_TOL = 1e-2  # max absolute error of the natural-log LSE
HKV = 2
BATCHES = [[0, 1], [0, 200], [0, 1000], [0, 4100], [0, 300, 301, 2000]]
REF = "cuda" if torch.cuda.is_available() else "cpu"  # where the inputs and references live


@contextlib.contextmanager
def poisoned_empty():
    """torch.empty (and so every array the package allocates) filled with NaN meanwhile."""
    was, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = fill
        torch.use_deterministic_algorithms(was, warn_only=warn)


def capacity(cu, hq):
    """Causal blocks over the batch and the heads: the mask entries of density 1."""
    return sum(hq * nb * (nb + 1) // 2 for nb in (-(-(b - a) // BLOCK) for a, b in zip(cu, cu[1:])))


def rel_err(a, b):
    a, b = a.double(), b.double()
    den = b.norm()
    return float((a - b).norm() / den) if den > 0 else float((a - b).norm())


def reference(q, k, v, cu, block_keep=None):
    """float32 attention per sequence. block_keep: per sequence a [nb, hq, nb] bool (our row
    order) or None for dense causal. Returns out [total, hq, d] and lse [hq, total] (-inf where a
    row keeps nothing)."""
    total, hq, d = q.shape
    out = torch.zeros(total, hq, d, device=REF)
    lse = torch.full((hq, total), float("-inf"), device=REF)
    for s in range(len(cu) - 1):
        lo, hi = cu[s], cu[s + 1]
        n = hi - lo
        if n == 0:
            continue
        qf = q[lo:hi].float().transpose(0, 1)
        kf = k[lo:hi].float().repeat_interleave(hq // k.shape[1], 1).transpose(0, 1)
        vf = v[lo:hi].float().repeat_interleave(hq // k.shape[1], 1).transpose(0, 1)
        scores = qf @ kf.transpose(1, 2) / d ** 0.5  # [hq, n, n]
        keep = torch.ones(n, n, dtype=torch.bool, device=REF).tril()
        if block_keep is not None:
            tok = block_keep[s].permute(1, 0, 2).repeat_interleave(BLOCK, 1).repeat_interleave(BLOCK, 2)
            keep = keep & tok[:, :n, :n]
        scores = scores.masked_fill(~keep, float("-inf"))
        lse[:, lo:hi] = torch.logsumexp(scores, -1)
        p = torch.softmax(scores, -1).nan_to_num(0.0)  # a row that keeps nothing gives 0
        out[lo:hi] = (p @ vf).transpose(0, 1)
    return out, lse


def sdpa_dense(q, k, v, cu):
    """Dense causal attention per sequence through torch SDPA's math backend in float32."""
    out = torch.zeros(q.shape, device=REF)
    rep = q.shape[1] // k.shape[1]
    for s in range(len(cu) - 1):
        lo, hi = cu[s], cu[s + 1]
        if hi == lo:
            continue
        def bhnd(x, r=1):
            return x[lo:hi].float().repeat_interleave(r, 1).transpose(0, 1).unsqueeze(0)
        with sdpa_kernel(SDPBackend.MATH):
            o = F.scaled_dot_product_attention(bhnd(q), bhnd(k, rep), bhnd(v, rep), is_causal=True)
        out[lo:hi] = o[0].transpose(0, 1)
    return out


def random_block_mask(cu, hq, gen):
    """A random mask over the packed batch: per sequence a [nb, hq, nb] keep (causal, diagonal
    kept) with about 10% of the rows emptied, and the same mask as our CSR arrays."""
    keeps, rows = [], []
    for s in range(len(cu) - 1):
        nb = -(-(cu[s + 1] - cu[s]) // BLOCK)
        idx = torch.arange(nb, device=REF)
        keep = torch.rand(nb, hq, nb, device=REF, generator=gen) < 0.4
        keep |= idx[None, None, :] == idx[:, None, None]
        keep &= idx[None, None, :] <= idx[:, None, None]
        keep &= torch.rand(nb, hq, 1, device=REF, generator=gen) >= 0.1
        keeps.append(keep)
        rows.append(keep.reshape(nb * hq, nb))
    counts = torch.cat([r.sum(1) for r in rows])
    row_offsets = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=REF)
    row_offsets[1:] = counts.cumsum(0)
    col_indices = torch.cat([r.nonzero()[:, 1] for r in rows]).to(torch.int32)
    return keeps, row_offsets, col_indices


def csr_to_keeps(row_offsets, col_indices, cu, hq):
    """Our CSR mask back to per-sequence [nb, hq, nb] keeps, checking its form on the way."""
    ro, ci = row_offsets.cpu().tolist(), col_indices.cpu().tolist()
    keeps, problems, first = [], [], 0
    for s in range(len(cu) - 1):
        nb = -(-(cu[s + 1] - cu[s]) // BLOCK)
        keep = torch.zeros(nb, hq, nb, dtype=torch.bool)
        for m in range(nb):
            for h in range(hq):
                cols = ci[ro[(first + m) * hq + h]:ro[(first + m) * hq + h + 1]]
                if any(c < 0 or c > m for c in cols) or cols != sorted(set(cols)):
                    problems.append(f"seq {s} block {m} head {h}: {cols[:8]}")
                cols = [c for c in cols if 0 <= c <= m]
                keep[m, h, cols] = True
                if not keep[m, h, m] or not keep[m, h, 0]:
                    problems.append(f"seq {s} block {m} head {h}: a forced block is missing")
        keeps.append(keep.to(REF))
        first += nb
    return keeps, problems


class Checker:
    def __init__(self, args):
        self.args = args
        self.dev = args.ours_device
        self.failures = 0
        self.count = 0

    def report(self, ok, name, case, detail):
        self.count += 1
        self.failures += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name:8s} {case}  {detail}", flush=True)

    def poisoned(self, total, hq, d, dtype):
        """A NaN-filled out for ours (the LSE comes from the package, allocated in poisoned_empty)."""
        return torch.full((total, hq, d), float("nan"), dtype=dtype, device=self.dev)

    def lse_err(self, lse, ref):
        """Max |error| over rows with keys, and whether the empty rows (ref -inf) are -inf."""
        lse = lse.to(REF)
        live = torch.isfinite(ref)
        err = float((lse[live] - ref[live]).abs().max()) if live.any() else 0.0
        return err, bool(torch.isneginf(lse[~live]).all())

    def case(self, dtype, d, ratio, cu, gen):
        hq, total = HKV * ratio, cu[-1]
        name = f"{str(dtype)[6:]:8s} D={d:3d} hq={hq:2d}/hkv={HKV} cu={cu}"
        q = torch.randn(total, hq, d, device=REF, dtype=dtype, generator=gen)
        k = torch.randn(total, HKV, d, device=REF, dtype=dtype, generator=gen)
        v = torch.randn(total, HKV, d, device=REF, dtype=dtype, generator=gen)
        qo, ko, vo = q.to(self.dev), k.to(self.dev), v.to(self.dev)  # ours' inputs
        ref_dense, ref_lse = reference(q, k, v, cu)
        checks = {}

        def check(label, fn):
            try:
                fn()
            except Exception as ex:
                self.report(False, label, name, f"error: {type(ex).__name__}: {str(ex)[:300]}")
                if self.args.verbose:
                    traceback.print_exc()

        # (a) dense vs torch SDPA, LSE vs logsumexp of the float32 scores.
        def dense():
            with poisoned_empty():
                out, lse = proxyattn.dense_attention(qo, ko, vo, cu_seqlens=cu, out=self.poisoned(total, hq, d, dtype),
                                                     return_lse=True)
            finite = bool(torch.isfinite(out).all() and torch.isfinite(lse).all())
            err = rel_err(out.to(REF), sdpa_dense(q, k, v, cu))
            lerr, _ = self.lse_err(lse, ref_lse)
            checks["dense"] = out.to(REF)
            self.report(finite and err < TOL and lerr < LSE_TOL, "dense", name,
                        f"out {err:.2e} lse {lerr:.2e} finite={finite}")

        # (b) sparse on a random block mask vs the float32 reference with the same token mask.
        def sparse():
            keeps, ro, ci = random_block_mask(cu, hq, gen)
            with poisoned_empty():
                out, lse = proxyattn.sparse_attention(qo, ko, vo, (ro.to(self.dev), ci.to(self.dev)), cu_seqlens=cu,
                                                      out=self.poisoned(total, hq, d, dtype), return_lse=True,
                                                      block_size=BLOCK)
            ref_out, ref_l = reference(q, k, v, cu, keeps)
            finite = bool(torch.isfinite(out).all())
            err = rel_err(out.to(REF), ref_out)
            lerr, empty_ok = self.lse_err(lse, ref_l)
            no_nan = not bool(torch.isnan(lse).any())
            self.report(finite and no_nan and empty_ok and err < TOL and lerr < LSE_TOL, "sparse", name,
                        f"out {err:.2e} lse {lerr:.2e} density {ci.numel() / capacity(cu, hq):.2f} "
                        f"finite={finite} empty_rows_-inf={empty_ok}")

        # (c) gamma = 1 keeps every causal block and reproduces dense attention.
        def gamma1():
            with poisoned_empty():
                out, lse, stats = proxyattn.attention(qo, ko, vo, cu_seqlens=cu, out=self.poisoned(total, hq, d, dtype),
                                                      return_lse=True, return_stats=True, gamma=1.0,
                                                      min_budget_tokens=0)
            density = int(stats["kept_blocks"].sum()) / capacity(cu, hq)
            finite = bool(torch.isfinite(out).all() and torch.isfinite(lse).all())
            err = rel_err(out.to(REF), checks["dense"] if "dense" in checks else ref_dense)
            lerr, _ = self.lse_err(lse, ref_lse)
            self.report(finite and density == 1.0 and err < TOL and lerr < LSE_TOL, "gamma1", name,
                        f"density {density:.4f} vs dense {err:.2e} lse {lerr:.2e} finite={finite}")

        # (d) the whole pipeline with sparse options: the mask estimate() gives is well-formed,
        # attention() with the same options keeps as many blocks per head (its stats), and its
        # output equals the float32 reference on that mask.
        def estimate():
            groups = 2 if ratio == 4 else 1  # exercise proxy groups too
            options = dict(gamma=0.9, min_budget_tokens=0, proxy_groups=groups)
            with poisoned_empty():
                out, lse, stats = proxyattn.attention(qo, ko, vo, cu_seqlens=cu, out=self.poisoned(total, hq, d, dtype),
                                                      return_lse=True, return_stats=True, **options)
            mask, est_stats = proxyattn.estimate(qo, ko, cu_seqlens=cu, return_stats=True, **options)
            nnz = mask.col_indices.numel()
            keeps, problems = csr_to_keeps(mask.row_offsets, mask.col_indices, cu, hq)
            kept_ok = int(est_stats["kept_blocks"].sum()) == nnz == int(mask.row_offsets[-1])
            same_ok = bool((stats["kept_blocks"] == est_stats["kept_blocks"]).all())
            ref_out, ref_l = reference(q, k, v, cu, keeps)
            finite = bool(torch.isfinite(out).all() and torch.isfinite(lse).all())
            err = rel_err(out.to(REF), ref_out)
            lerr, _ = self.lse_err(lse, ref_l)
            ok = finite and not problems and kept_ok and same_ok and err < TOL and lerr < LSE_TOL
            detail = (f"out {err:.2e} lse {lerr:.2e} density {nnz / capacity(cu, hq):.2f} groups {groups} "
                      f"finite={finite} kept_sum_ok={kept_ok} attention_kept_same={same_ok}")
            if problems:
                detail += f" mask problems ({len(problems)}): {problems[0]}"
            self.report(ok, "estimate", name, detail)

        for label, fn in (("dense", dense), ("sparse", sparse), ("gamma1", gamma1), ("estimate", estimate)):
            check(label, fn)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="bf16, D=128, GQA ratio 4 only")
    p.add_argument("--ours-device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    args = p.parse_args()
    # The references must be float32 exact, not TF32.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if args.ours_device == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA GPU here: use --ours-device cpu")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (references on the CPU)"
    print(f"GPU {gpu}, torch {torch.__version__}, proxyattn {proxyattn.__version__} "
          f"({proxyattn.__file__}), ours on {args.ours_device}", flush=True)
    if args.ours_device == "cuda" and not proxyattn.cuda_available():
        print("the proxyattn package has no CUDA backend: every check fails", flush=True)
    with poisoned_empty():
        if not torch.isnan(torch.empty(4, device=args.ours_device)).all():
            print("note: torch.empty is not NaN-filled here, so the LSE is not poisoned before each run", flush=True)

    dtypes = [torch.bfloat16] if args.quick else [torch.bfloat16, torch.float16]
    dims = [128] if args.quick else [64, 128, 256]
    ratios = [4] if args.quick else [1, 4, 8]
    gen = torch.Generator(device=REF).manual_seed(args.seed)
    checker = Checker(args)
    for dtype in dtypes:
        for d in dims:
            for ratio in ratios:
                for cu in BATCHES:
                    checker.case(dtype, d, ratio, cu, gen)
                    torch.cuda.empty_cache()
    print(f"{checker.count - checker.failures} of {checker.count} checks passed", flush=True)
    sys.exit(1 if checker.failures else 0)


if __name__ == "__main__":
    main()
