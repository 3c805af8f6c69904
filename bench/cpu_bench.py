"""Dense causal attention on the CPU: the library's kernels at each instruction-set level against
torch's CPU SDPA (its flash kernel) in one run, and, given their binaries, older builds.

    python3 bench/cpu_bench.py --lengths 4096 8192 --json cpu_bench.json \\
        --binary new=build/tools/proxyattn/proxyattn --binary old=/tmp/old/build/tools/proxyattn/proxyattn

Llama-3.1-8B attention shape (32 q heads, 8 kv heads, D 128), fp32, one sequence, all threads
(OMP_NUM_THREADS and torch.set_num_threads alike). A binary with --cpu-kernels runs once per level
this CPU has (newer builds); one without (older builds) runs once. torch runs with its best
level and again held to AVX2 (a fresh process with ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS and
DNNL_MAX_CPU_ISA set) on x86-64.
GFLOP/s count the causal region: 2 * D * Hq * N * (N + 1).
"""
import argparse
import json
import os
import subprocess
import sys
import time


def flops(n, hq=32, d=128):
    return 2.0 * d * hq * n * (n + 1)


def torch_ms(n, threads, reps):
    import torch
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(n)
    q = torch.randn(1, 32, n, 128, generator=g)
    k, v = (torch.randn(1, 8, n, 128, generator=g).repeat_interleave(4, 1) for _ in range(2))
    torch.nn.functional.scaled_dot_product_attention(q[:, :, :512], k[:, :, :512], v[:, :, :512], is_causal=True)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3, torch.backends.cpu.get_cpu_capability()


def ours(binary, n, level, reps):
    cmd = [binary, "bench", "--device", "cpu", "--dtype", "fp32", "--lengths", str(n), "--densities", "1",
           "--repeat", str(reps), "--json"] + (["--cpu-kernels", level] if level else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out[out.index("["):])[0]["dense_ms"]


def levels(binary):
    """The levels a binary can run here, widest first ([None]: a build without --cpu-kernels)."""
    help_text = subprocess.run([binary, "bench", "--help"], capture_output=True, text=True).stdout
    if "--cpu-kernels" not in help_text:
        return [None]
    found = []
    for name in ("avx512", "avx2", "sse4", "sse2", "neon"):
        r = subprocess.run([binary, "bench", "--device", "cpu", "--lengths", "1", "--densities", "1",
                            "--cpu-kernels", name], capture_output=True, text=True)
        if r.returncode == 0:
            found.append(name)
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192])
    ap.add_argument("--binary", action="append", default=[], metavar="NAME=PATH", help="a proxyattn CLI to time")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--levels", nargs="*", help="only these instruction-set levels of the binaries that have several")
    ap.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json")
    args = ap.parse_args()
    threads = os.cpu_count()
    if args.torch_only:  # the child process of the avx2 run
        print(json.dumps([torch_ms(n, threads, args.reps) for n in args.lengths]))
        return
    rows = []
    for n in args.lengths:
        ms, cap = torch_ms(n, threads, args.reps)
        rows.append(dict(n=n, name=f"torch SDPA ({cap})", ms=ms))
        print(f"{n:6d} torch SDPA ({cap}) {ms:9.0f} ms {flops(n) / ms / 1e6:7.1f} GFLOP/s", flush=True)
    if sys.platform.startswith("linux") and os.uname().machine == "x86_64":
        # torch's own kernels and the GEMM libraries under them, each held to AVX2.
        env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", MKL_ENABLE_INSTRUCTIONS="AVX2", DNNL_MAX_CPU_ISA="AVX2")
        out = subprocess.run([sys.executable, __file__, "--torch-only", "--reps", str(args.reps), "--lengths",
                              *map(str, args.lengths)], env=env, capture_output=True, text=True, check=True).stdout
        for n, (ms, cap) in zip(args.lengths, json.loads(out)):
            rows.append(dict(n=n, name=f"torch SDPA ({cap})", ms=ms))
            print(f"{n:6d} torch SDPA ({cap}) {ms:9.0f} ms {flops(n) / ms / 1e6:7.1f} GFLOP/s", flush=True)
    for spec in args.binary:
        name, path = spec.rsplit("=", 1)
        for level in [x for x in levels(path) if not args.levels or x is None or x in args.levels]:
            for n in args.lengths:
                ms = ours(path, n, level, args.reps)
                label = f"{name} ({level})" if level else name
                rows.append(dict(n=n, name=label, ms=ms))
                print(f"{n:6d} {label:20s} {ms:9.0f} ms {flops(n) / ms / 1e6:7.1f} GFLOP/s", flush=True)
    print("\n| tokens | kernel | ms | GFLOP/s |\n|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["n"], r["ms"])):
        print(f"| {r['n']} | {r['name']} | {r['ms']:.0f} | {flops(r['n']) / r['ms'] / 1e6:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(cpu=open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": ")
                           if os.path.exists("/proc/cpuinfo") else "", threads=threads, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
