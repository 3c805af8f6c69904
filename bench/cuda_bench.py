"""ProxyAttn against its peers on one CUDA GPU (DESIGN.md section 3): bf16, batch 1, causal, one
layer of Llama-3.1-8B (32 q / 8 kv heads, D 128) and Qwen2.5-7B (28 q / 4 kv heads, D 128); with
--shapes gemma2-9b also Gemma-2-9B (16 q / 8 kv heads, D 256).

Per length: cuDNN SDPA and torch flash SDPA (dense), ours dense; at each density a random block
mask (plus the forced diagonal and sink blocks) run by ours (sparse_attention) and by
FlexAttention with the same mask; our estimate alone and our whole layer (estimate + sparse, one
call) at the density the estimate picks on random data, and at lower gammas (--layer-gammas,
default 0.1), where it picks a density of about gamma. Each time is the median of CUDA-event timings
after warm-up; TFLOP/s count 4*D per kept causal (query, key) pair, exactly from the mask.

  python3 bench/cuda_bench.py [--quick] [--kernel sm80]

Ours is the installed proxyattn package (pip install . or scripts/install_python.sh with the CUDA
backend), called as a user calls it: proxyattn.dense_attention, sparse_attention, estimate
(copy=False: views, no synchronisation) and attention. The package caches one plan per problem;
each of our methods starts from an empty cache and its warm-up calls build its plan, so no timed
call includes plan creation. proxyattn.sparse_attention reads the mask's row offsets back to
check them (a host synchronisation) except while a CUDA graph is captured, so ours_sparse is
timed as replays of a CUDA graph holding one call, captured after an eager call has checked the
mask; ours_estimate too, so that its few-millisecond timings hold only the estimator's kernels
(--sparse-eager times both as eager calls, host work included).

--kernel auto|sm80|sm90[,ctas=N][,split=N][,pack=1] sets PROXYATTN_KERNEL (the library reads it when it
builds a plan) before any of our calls; it is recorded in the JSON meta. Every estimate run also
records the sha256 (16 hex digits) of its mask (row_offsets bytes, then col_indices bytes up to
row_offsets[-1]), so that two runs or builds can be compared bit for bit, and each of its
kernels' time per call (kernels_us, from torch.profiler over 20 calls; the rest of the call's time
lies between its kernels).
--skip flash flex estimate leaves out peers and stages for a quick A/B of our kernels.
--ab PYTHONPATH times an earlier tree (its package installed at PYTHONPATH) against this one in one
run: two worker processes of this script take turns on the GPU, one timed method at a time in ABBA
order, so that the two timings of a method lie seconds apart on a board in the same state
(bench/summarize.py --ab reads the two JSONs):

  python3 bench/cuda_bench.py --ab /tmp/before --out ab/bench_after_1.json --ab-out ab/bench_before_1.json
"""
import argparse
import datetime
import gc
import hashlib
import json
import math
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time
import traceback

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import proxyattn

REPO = pathlib.Path(__file__).resolve().parent.parent

SHAPES = {"llama3.1-8b": (32, 8, 128), "qwen2.5-7b": (28, 4, 128),  # q heads, kv heads, D
          "qwen2.5-0.5b": (14, 2, 64),  # the evaluation model (eval/MODELS.md)
          "gemma2-9b": (16, 8, 256)}
BLOCK = 128  # our default block size, and FlexAttention's


def git_commit():
    if os.environ.get("PROXYATTN_COMMIT"):  # the GPU machine gets a copy of the tree without .git
        return os.environ["PROXYATTN_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return "unknown"


def time_ms(fn, nsets, warmup, reps):
    """Median ms of one fn(set_index) call. Short calls are batched inside one event pair (up to
    ~1 ms of work) so that host launch costs (Python, the package's call) hide behind GPU work; the
    same rule applies to every method. At least one warm-up call runs: it builds the plan (cached
    in the package), which no timed call then includes."""
    for i in range(max(1, warmup)):
        fn(i % nsets)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn(0)
    end.record()
    end.synchronize()
    inner = max(1, min(32, math.ceil(1.0 / max(start.elapsed_time(end), 1e-3))))
    times = []
    for r in range(reps):
        start.record()
        for j in range(inner):
            fn((r * inner + j) % nsets)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return statistics.median(times)


class Turns:
    """The worker side of --ab (--turns R,W): the process runs only between a "go" read from fd R
    and the key of the method it has just timed, written to fd W, so that the two trees never run
    kernels at once and their timings of one method lie seconds apart."""

    def __init__(self, spec):
        r, w = (int(fd) for fd in spec.split(","))
        self.go, self.done_pipe = os.fdopen(r, "r"), os.fdopen(w, "w", buffering=1)
        self.wait()

    def wait(self):
        if self.go.readline() != "go\n":
            sys.exit("cuda_bench.py --turns: the A/B coordinator is gone")

    def done(self, key):
        torch.cuda.synchronize()
        self.done_pipe.write(key + "\n")
        self.wait()


def without_flags(argv, flags):
    """argv without the given options and their values (as "--flag value" or "--flag=value")."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a.split("=")[0] in flags:
            skip = "=" not in a
        else:
            out.append(a)
    return out


def interleave(args):
    """--ab: this tree (the package Python finds) and the earlier one (the package on args.ab) as two
    worker processes of this script, taking turns on the GPU one timed method at a time, the tree
    args.ab_first first in even turns and second in odd ones (ABBA; a method keeps its turn's
    parity from run to run, so runs that alternate --ab-first put each tree first equally often).
    Each writes its JSON (--out, --ab-out) and its log beside it (.log). Returns the exit status: 0
    when both workers succeeded."""
    import signal
    common = without_flags(sys.argv[1:], {"--ab", "--ab-options", "--ab-out", "--ab-first", "--out", "--options"})
    trees = {"before": (args.ab_out, args.ab_options, args.ab), "after": (args.out, args.options, None)}
    workers = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("cuda_bench.py --ab: terminated"))
    try:
        for name, (out, options, path) in trees.items():
            go_r, go_w = os.pipe()
            done_r, done_w = os.pipe()
            env = dict(os.environ)
            if path is not None:
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
            cmd = [sys.executable, os.path.abspath(__file__)] + common + [
                "--out", out, "--options", json.dumps(options), "--turns", f"{go_r},{done_w}"]
            log = open(pathlib.Path(out).with_suffix(".log"), "w")
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, pass_fds=(go_r, done_w))
            os.close(go_r)
            os.close(done_w)
            workers[name] = (proc, os.fdopen(go_w, "w", buffering=1), os.fdopen(done_r, "r"))
        first, second = ("before", "after") if args.ab_first == "before" else ("after", "before")
        turn, alive, apart = 0, set(workers), 0
        while alive:
            keys = {}
            for name in (first, second) if turn % 2 == 0 else (second, first):
                if name not in alive:
                    continue
                _, go, done = workers[name]
                try:
                    go.write("go\n")
                    line = done.readline()
                except BrokenPipeError:
                    line = ""
                if line:
                    keys[name] = line.strip()
                else:
                    alive.discard(name)  # finished (or failed: its exit status tells)
            if len(set(keys.values())) > 1:
                apart += 1
                print(f"turn {turn}: out of step ({keys})", flush=True)
            turn += 1
        codes = {name: w[0].wait() for name, w in workers.items()}
        print(f"--ab: {turn - 1} turns, {apart} out of step; exit status {codes}", flush=True)
        return 0 if not any(codes.values()) else 1
    finally:
        for proc, _, _ in workers.values():
            if proc.poll() is None:
                proc.kill()


def graphed(fn, nsets):
    """fn(i) for each input set captured once in a CUDA graph, after an eager call per set (which
    builds the plan and checks the inputs); returns a function that replays graph i."""
    for i in range(nsets):
        fn(i)
    torch.cuda.synchronize()
    graphs = []
    for i in range(nsets):
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn(i)
        graphs.append(g)
    torch.cuda.synchronize()
    return lambda i: graphs[i].replay()


def graphed_or_eager(fn, nsets, eager, label):
    """(timed function, how): CUDA-graph replays of fn (graphed), or the eager calls where eager is
    set or the capture fails (which fail in turn if the call does), saying so under label."""
    if eager:
        return fn, "eager"
    try:
        return graphed(fn, nsets), "cuda_graph"
    except Exception as ex:
        how = f"eager (no CUDA graph: {type(ex).__name__}: {str(ex)[:200]})"
        print(f"{label}: {how}", flush=True)
        return fn, how


def kernel_name(name):
    """A profiler's kernel name without "void", namespaces and arguments, its template arguments
    kept where they are plain (stage1_sm90_kernel<__nv_bfloat16, 256>, DeviceScanKernel)."""
    name = re.sub(r"^void |\(anonymous namespace\)::", "", name)
    head, _, tail = name.partition("<")
    head = head.split("(")[0].split("::")[-1].strip()
    targs = tail.split(">(")[0]
    return f"{head}<{targs}>" if targs and "::" not in targs else head


def kernel_times(fn, calls=20):
    """Microseconds per call of each kernel (and memset) that fn(0) runs, from torch.profiler over
    `calls` calls: which kernel a difference in the call's time comes from, and how much of the
    call's time lies between its kernels. fn has run (warm-up and timing) before this."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn(0)
        torch.cuda.synchronize()
    per = {}
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            t = getattr(ev, "device_time", None)
            t = ev.cuda_time if t is None else t
            name = kernel_name(ev.name)
            per[name] = per.get(name, 0.0) + t / calls
    return per


def fresh_plans():
    """Empties the package's plan cache before each of our timed methods, so that each method's
    plan and workspace are made anew in every tree. Otherwise which calls share a plan depends on
    the options (sparse_attention takes the default ones), and an A/B between trees whose defaults
    differ would time one tree's estimate on a second workspace and the other's on a shared one."""
    torch.cuda.synchronize()
    proxyattn.clear_plan_cache()


def mask_digest(mask):
    """16 hex digits of the sha256 of a BlockMask: its row_offsets bytes, then its col_indices bytes
    up to row_offsets[-1] (the kept entries)."""
    row_offsets = mask.row_offsets.contiguous().cpu()
    nnz = int(row_offsets[-1])
    h = hashlib.sha256()
    for t in (row_offsets, mask.col_indices[:nnz].contiguous().cpu()):
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def random_keep(nb, hq, density, gen):
    """[nb, hq, nb] bool in our row order (row = block * hq + head): each causal block below the
    diagonal kept with probability `density`, plus the diagonal and block 0 (the forced blocks)."""
    idx = torch.arange(nb, device="cuda")
    keep = torch.rand(nb, hq, nb, device="cuda", generator=gen) < density
    keep &= idx[None, None, :] < idx[:, None, None]
    keep |= (idx[None, None, :] == idx[:, None, None]) | (idx[None, None, :] == 0)
    return keep


def to_csr(keep):
    """Our CSR mask of a [nb, hq, nb] keep tensor: row_offsets int64, col_indices int32 ascending."""
    rows = keep.reshape(-1, keep.shape[-1])
    row_offsets = torch.zeros(rows.shape[0] + 1, dtype=torch.int64, device="cuda")
    row_offsets[1:] = rows.sum(1).cumsum(0)
    col_indices = rows.nonzero()[:, 1].to(torch.int32)  # row-major order: ascending per row
    return row_offsets, col_indices


def kept_pairs(row_offsets, col_indices, n, hq):
    """Causal (query, key) pairs inside the kept blocks of a one-sequence mask, over all heads:
    a block left of the diagonal gives rows*B pairs, the diagonal block rows*(rows+1)/2."""
    counts = row_offsets.diff()
    row = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    m = row // hq
    rows = (n - m * BLOCK).clamp(max=BLOCK)
    pairs = torch.where(col_indices.to(torch.int64) == m, rows * (rows + 1) // 2, rows * BLOCK)
    return int(pairs.sum())


def causal(b, h, q_idx, kv_idx):
    # One module-level mask_mod, so that a new BlockMask does not make torch.compile recompile.
    return q_idx >= kv_idx


def flex_block_mask(keep):
    """A FlexAttention BlockMask with the same kept blocks: the ones left of the diagonal as full
    blocks, the diagonal as a partial block with the causal mask_mod."""
    from torch.nn.attention.flex_attention import BlockMask
    nb, hq, _ = keep.shape
    idx = torch.arange(nb, device="cuda")
    full = (keep & (idx[None, None, :] < idx[:, None, None])).permute(1, 0, 2).unsqueeze(0)
    # Every tensor made contiguous: FlexAttention reads them as if they were, and the permuted
    # views above would silently give a different mask.
    full = full.contiguous()
    full_num = full.sum(-1, dtype=torch.int32)
    full_idx = torch.argsort(full.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
    diag_num = keep[idx, :, idx].t().unsqueeze(0).to(torch.int32)  # [1, hq, nb]
    diag_idx = idx.to(torch.int32).view(1, 1, nb, 1).expand(1, hq, nb, nb)
    return BlockMask.from_kv_blocks(diag_num.contiguous(), diag_idx.contiguous(), full_num.contiguous(),
                                    full_idx.contiguous(), BLOCK_SIZE=BLOCK, mask_mod=causal)


def rel_err(a, b):
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


class Bench:
    def __init__(self, args, turns=None):
        self.args = args
        self.turns = turns  # Turns, in a worker of --ab
        self.results = []
        self._flex = None

    def flex(self):
        # Compiled once; the shapes change per length, so lift dynamo's recompile limit (falling
        # back to eager FlexAttention would materialise N x N scores).
        if self._flex is None:
            import torch._dynamo
            from torch.nn.attention.flex_attention import flex_attention
            for name in ("cache_size_limit", "recompile_limit"):
                if hasattr(torch._dynamo.config, name):
                    setattr(torch._dynamo.config, name, 256)
            self._flex = torch.compile(flex_attention, dynamic=False)
        return self._flex

    def measure(self, ctx, method, fn, nsets, pairs=None, density=None, check=None, info=None, **fields):
        """Times fn, records and prints one result; a failure is recorded, never raised.
        pairs: a number or a function giving it; check: a function giving an error to print;
        info: a function giving more fields to record (after the timing); fields: recorded as given."""
        rec = dict(ctx, method=method, density=density, **fields)
        if self.args.rest > 0:
            torch.cuda.synchronize()
            time.sleep(self.args.rest)
        try:
            ms = time_ms(fn, nsets, self.args.warmup, self.args.reps)
            rec["ms"] = ms
            pairs = pairs() if callable(pairs) else pairs
            rec["tflops"] = 4 * ctx["d"] * pairs / ms / 1e9 if pairs else None
            if ctx.get("cudnn_ms"):
                rec["x_cudnn"] = ms / ctx["cudnn_ms"]
            if check is not None:
                rec["err"] = check()
            if info is not None:
                try:
                    rec.update(info())
                except Exception as ex:  # the timing stands
                    rec["info_error"] = f"{type(ex).__name__}: {ex}"
            line = f"{ms:9.3f} ms"
            if rec["tflops"]:
                line += f" {rec['tflops']:6.0f} TFLOP/s"
            if rec.get("x_cudnn"):
                line += f"  {rec['x_cudnn']:.3f}x cuDNN time"
            if "err" in rec:
                line += f"  err {rec['err']:.1e}"
            if rec.get("mask_sha256"):
                line += f"  mask {rec['mask_sha256']}"
        except Exception as ex:  # one failure must not stop the run
            rec["error"] = f"{type(ex).__name__}: {ex}"
            line = "failed: " + rec["error"][:300]
            if self.args.verbose:
                traceback.print_exc()
            torch.cuda.empty_cache()
        dens = f" d={density:.3f}" if density is not None else ""
        print(f"{ctx['shape']:12s} n={ctx['n']:7d} {method:14s}{dens:9s} {line}", flush=True)
        rec.pop("cudnn_ms", None)
        self.results.append(rec)
        if self.turns:
            self.turns.done(f"{ctx['shape']} {ctx['n']} {method} {density}")
        return rec

    def length(self, shape, n):
        hq, hkv, d = SHAPES[shape]
        args = self.args
        ctx = dict(shape=shape, n=n, hq=hq, hkv=hkv, d=d)
        gen = torch.Generator(device="cuda").manual_seed(args.seed + n)
        # Rotate input sets when one set is within twice the L2 size, where repeated runs on the
        # same inputs could be served partly from L2 (8K Llama: 100 MB of inputs, 60 MB of L2).
        l2 = torch.cuda.get_device_properties(0).L2_cache_size
        nsets = 3 if n * (hq + 2 * hkv) * d * 2 < 2 * l2 else 1

        def randn(h):
            return torch.randn(n, h, d, device="cuda", dtype=torch.bfloat16, generator=gen)

        sets = [(randn(hq), randn(hkv), randn(hkv)) for _ in range(nsets)]  # our layout [N, H, D]
        out = torch.empty(n, hq, d, device="cuda", dtype=torch.bfloat16)
        dense_pairs = hq * n * (n + 1) // 2

        # Peers' layout [1, H, N, D]; SDPA gets K, V repeated to the q heads (GQA).
        def bhnd(x):
            return x.transpose(0, 1).unsqueeze(0).contiguous()

        peer = [(bhnd(q), bhnd(k), bhnd(v)) for q, k, v in sets]
        rep = [(k.repeat_interleave(hq // hkv, 1), v.repeat_interleave(hq // hkv, 1)) for _, k, v in peer]
        ref = {}
        for method, backend in (("cudnn_dense", SDPBackend.CUDNN_ATTENTION),
                                ("flash_dense", SDPBackend.FLASH_ATTENTION)):
            if method.split("_")[0] in args.skip:
                continue

            def sdpa(i, backend=backend):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(peer[i][0], rep[i][0], rep[i][1], is_causal=True)
            rec = self.measure(ctx, method, sdpa, nsets, dense_pairs)
            if "ms" in rec and "dense" not in ref:
                ref["dense"] = sdpa(0)[0].transpose(0, 1)  # [N, Hq, D], to check ours against
                ref["dense_from"] = method
            if method == "cudnn_dense" and "ms" in rec:
                ctx["cudnn_ms"] = rec["ms"]
                rec["x_cudnn"] = 1.0
        rep.clear()  # free the repeated K, V before our runs
        causal_blocks = hq * (n // BLOCK) * (n // BLOCK + 1) // 2

        def dense(i):
            return proxyattn.dense_attention(*sets[i], out=out)

        def check_dense():
            dense(0)
            return rel_err(out, ref["dense"]) if "dense" in ref else float("nan")

        if "dense" not in args.skip:
            fresh_plans()
            self.measure(ctx, "ours_dense", dense, nsets, dense_pairs, check=check_dense)

        flex = None
        for density in args.densities:
            try:
                keep = random_keep(n // BLOCK, hq, density, gen)
                ro, ci = to_csr(keep)
                pairs = kept_pairs(ro, ci, n, hq)
            except Exception as ex:
                print(f"{shape:12s} n={n:7d} mask d={density} failed: {ex}", flush=True)
                continue
            real = ci.numel() / causal_blocks
            res = {}

            def flex_call(i, mask=None):
                return flex(peer[i][0], peer[i][1], peer[i][2], block_mask=mask, enable_gqa=True)

            try:
                if "flex" not in args.skip:
                    flex = self.flex()
                    mask = flex_block_mask(keep)
                    rec = self.measure(ctx, "flex_sparse", lambda i: flex_call(i, mask), nsets, pairs, real)
                    if "ms" in rec:
                        res["flex"] = flex_call(0, mask)[0].transpose(0, 1)
            except Exception as ex:
                print(f"{shape:12s} n={n:7d} flex mask failed: {ex}", flush=True)

            def sparse(i, ro=ro, ci=ci):
                return proxyattn.sparse_attention(*sets[i], (ro, ci), out=out, block_size=BLOCK)

            def check_sparse(sparse=sparse):
                sparse(0)
                return rel_err(out, res["flex"]) if "flex" in res else float("nan")

            fresh_plans()
            timed, how = graphed_or_eager(sparse, nsets, args.sparse_eager,
                                          f"{shape:12s} n={n:7d} ours_sparse d={density}")
            self.measure(ctx, "ours_sparse", timed, nsets, pairs, real, check=check_sparse, timing=how)

        if "estimate" in args.skip:
            return
        # The estimator with the default options, and the whole layer (one call: estimate, then the
        # sparse kernel on its mask) at the density it picks. Random inputs have flat attention, so
        # the default gamma keeps nearly every block; --layer-gammas adds layers at lower gammas,
        # where the density the estimate picks on such inputs is about gamma. Each records the
        # digest of the mask its options give on the first input set.
        masks = {}

        def estimated(options):
            key = tuple(sorted(options.items()))
            if key not in masks:
                m = proxyattn.estimate(*sets[0][:2], **options)  # copies, trimmed to the kept entries
                masks[key] = dict(density=m.col_indices.numel() / causal_blocks, digest=mask_digest(m),
                                  pairs=kept_pairs(m.row_offsets, m.col_indices, n, hq))
            return masks[key]

        base = args.options

        def estimate(i):
            return proxyattn.estimate(*sets[i][:2], copy=False, **base)

        # Replayed from a CUDA graph, as the sparse kernel: the estimator's kernels without the host
        # work of the call, which at 0.3-5 ms would otherwise show in the timing.
        fresh_plans()
        timed, how = graphed_or_eager(estimate, nsets, args.sparse_eager, f"{shape:12s} n={n:7d} ours_estimate")
        rec = self.measure(ctx, "ours_estimate", timed, nsets,
                           info=lambda: {"mask_sha256": estimated(base)["digest"]}, timing=how)
        if "ms" in rec:
            try:
                rec["kernels_us"] = kernel_times(timed)
            except Exception as ex:  # the timing stands
                rec["kernels_error"] = f"{type(ex).__name__}: {ex}"
        for gamma in [] if "layer" in args.skip else [None] + list(args.layer_gammas):
            options = dict(base) if gamma is None else {**base, "gamma": gamma}
            fresh_plans()  # before the density's estimate, whose plan the timed calls then reuse
            try:
                density = estimated(options)["density"]
            except Exception:
                density = None  # the measurement below fails and says why
            name = "ours_attention" if gamma is None else f"ours_layer_g{gamma:g}"
            self.measure(ctx, name, lambda i, options=options: proxyattn.attention(*sets[i], out=out, **options),
                         nsets, lambda options=options: estimated(options)["pairs"], density,
                         info=lambda options=options: {"mask_sha256": estimated(options)["digest"]}, gamma=gamma)

    def run(self):
        for shape in self.args.shapes:
            for n in self.args.lengths:
                try:
                    self.length(shape, n)
                except Exception as ex:
                    print(f"{shape:12s} n={n:7d} failed: {type(ex).__name__}: {ex}", flush=True)
                gc.collect()
                proxyattn.clear_plan_cache()  # the plans' workspaces, before the next length
                torch.cuda.empty_cache()


def print_table(results):
    print("\nshape        N       method          density       ms  TFLOP/s  t/cuDNN      err  mask")
    for r in results:
        dens = f"{r['density']:.3f}" if r.get("density") is not None else "-"
        if "error" in r:
            print(f"{r['shape']:12s} {r['n']:7d} {r['method']:15s} {dens:>7s}   failed")
            continue
        tf = f"{r['tflops']:8.0f}" if r.get("tflops") else "       -"
        x = f"{r['x_cudnn']:8.3f}" if r.get("x_cudnn") else "       -"
        err = f"{r['err']:8.1e}" if r.get("err") is not None else "       -"
        print(f"{r['shape']:12s} {r['n']:7d} {r['method']:15s} {dens:>7s} {r['ms']:8.3f} {tf} {x} {err}"
              + (f"  {r['mask_sha256']}" if r.get("mask_sha256") else ""))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 16384, 32768, 65536, 131072])
    p.add_argument("--densities", type=float, nargs="*", default=[1.0, 0.5, 0.2, 0.1, 0.05],
                   help="densities of the random masks the sparse kernel runs on (none: no sparse rows)")
    p.add_argument("--shapes", nargs="+", default=["llama3.1-8b", "qwen2.5-7b"], choices=list(SHAPES))
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: 8K and 16K, densities 1.0 and 0.1")
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    p.add_argument("--skip", nargs="*", default=[], choices=["cudnn", "flash", "flex", "dense", "estimate", "layer"],
                   help="leave out cuDNN SDPA, torch flash SDPA, FlexAttention, our dense attention, our "
                        "estimate and whole layer, or only the whole layer (A/B runs and profiles of one kernel)")
    p.add_argument("--layer-gammas", type=float, nargs="*", default=[0.1],
                   help="also time the whole layer with a plan at each of these gammas (on random inputs "
                        "the estimate then keeps about that fraction of the blocks; default 0.1, none: "
                        "--layer-gammas with no value)")
    p.add_argument("--options", type=json.loads, default={},
                   help="JSON object of plan options for every estimate and layer, such as "
                        "'{\"gamma\": 0.92}' (an A/B against a tree whose defaults differ)")
    p.add_argument("--kernel", default=os.environ.get("PROXYATTN_KERNEL"),
                   metavar="{auto,sm80,sm90}[,ctas=N][,split=N]",
                   help="our kernels: sets PROXYATTN_KERNEL before any of our calls (passed through as "
                        "given; default: left as it is, so that an older build, which knows other values, "
                        "runs its own default)")
    p.add_argument("--sparse-eager", action="store_true",
                   help="time ours_sparse and ours_estimate as eager calls (sparse_attention with the "
                        "package's mask check, a host synchronisation) instead of CUDA-graph replays")
    p.add_argument("--rest", type=float, default=0.0, metavar="SECONDS",
                   help="idle the GPU this long before each timed method, so that each starts from a "
                        "board cooled alike rather than from the heat of the method before it")
    p.add_argument("--out", default=None, help="JSON results (default bench/results/cuda_bench_<date>.json)")
    p.add_argument("--ab", metavar="PYTHONPATH",
                   help="A/B against an earlier tree, the package installed at PYTHONPATH: both run as "
                        "workers of this script that take turns on the GPU, one timed method at a time in "
                        "ABBA order; needs --out and --ab-out (the earlier tree's JSON); each log lies "
                        "beside its JSON")
    p.add_argument("--ab-options", type=json.loads, default={}, help="--options of the earlier tree")
    p.add_argument("--ab-out", help="the earlier tree's JSON results")
    p.add_argument("--ab-first", choices=["before", "after"], default="before",
                   help="the tree that runs first in even turns (alternate it from run to run)")
    p.add_argument("--turns", help=argparse.SUPPRESS)  # R,W: a worker of --ab (Turns)
    args = p.parse_args()
    if args.ab is not None:
        if not args.out or not args.ab_out:
            p.error("--ab needs --out and --ab-out")
        return interleave(args)
    turns = Turns(args.turns) if args.turns else None
    if args.kernel:
        os.environ["PROXYATTN_KERNEL"] = args.kernel  # read when the library builds a plan
    if args.quick:
        args.lengths, args.densities, args.reps = [8192, 16384], [1.0, 0.1], 5
    args.reps = max(args.reps, 5)
    for n in args.lengths:
        if n % BLOCK:
            p.error(f"--lengths must be multiples of {BLOCK}, got {n}")

    now = datetime.datetime.now()
    meta = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "date": now.isoformat(timespec="seconds"),
            "commit": git_commit(), "library": str(pathlib.Path(proxyattn.__file__).parent),
            "proxyattn": proxyattn.__version__, "proxyattn_cuda": proxyattn.cuda_available(), "args": vars(args),
            "kernel": args.kernel, "sparse_timing": "eager" if args.sparse_eager else "cuda_graph"}
    print(f"GPU {meta['gpu']}, torch {meta['torch']}, {meta['date']}, commit {meta['commit']}", flush=True)
    print(f"proxyattn {meta['proxyattn']} ({meta['library']}), kernel {meta['kernel']}, ours_sparse timed as "
          f"{meta['sparse_timing']}" + ("" if meta["proxyattn_cuda"] else ", NO CUDA BACKEND: ours will fail"),
          flush=True)

    bench = Bench(args, turns)
    bench.run()

    out = pathlib.Path(args.out or REPO / "bench" / "results" / f"cuda_bench_{now:%Y-%m-%d_%H%M%S}.json")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"meta": meta, "results": bench.results}, indent=1))
        print(f"\nwrote {out}")
    except OSError as ex:
        print(f"\nwriting {out} failed: {ex}")
    print_table(bench.results)


if __name__ == "__main__":
    sys.exit(main())
