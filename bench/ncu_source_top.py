"""The per-instruction CSV of `ncu --page source --csv --print-source sass` (the ncu step of
bench/gpu_session.sh with NCU_SECTIONS=SourceCounters writes it): load() gives its header and rows;
run as a script, it prints the instructions with the most warp-state samples and their top stall
reasons, the stall reasons over the whole kernel, and with --spans N the samples and executed
instructions of every run of N consecutive instructions (with the kinds of the memory, barrier,
tensor and MUFU instructions in it), which shows which part of the kernel the samples fall in.
  python3 bench/ncu_source_top.py ncu_source.csv [TOP] [--spans N]"""
import argparse
import csv

KINDS = ("HGMMA", "WARPGROUP", "MUFU", "SHFL", "ATOMS", "BAR", "LDGSTS", "LDS", "STS", "LDG", "STG", "MEMBAR")


def num(x):
    try:
        return float(x.replace(",", ""))
    except ValueError:
        return 0.0


def load(path):
    """(header, rows, column index by name, samples column, source column, total samples)."""
    rows = list(csv.reader(open(path)))
    hi = next(i for i, r in enumerate(rows) if "Address" in r and "Source" in r)
    hdr, body = rows[hi], rows[hi + 1:]
    ci = {c: i for i, c in enumerate(hdr)}
    samples = ci["Warp Stall Sampling (All Samples)"]
    return hdr, body, ci, samples, ci["Source"], sum(num(r[samples]) for r in body)


def opcode(source):
    words = source.split()
    if words and words[0].startswith("@"):  # a predicate guard
        words = words[1:]
    return words[0].split(".")[0] if words else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("top", nargs="?", type=int, default=45)
    ap.add_argument("--spans", type=int, default=0, help="also the samples of every N consecutive instructions")
    args = ap.parse_args()
    hdr, body, ci, samples, src, total = load(args.csv)
    stalls = [i for i, c in enumerate(hdr) if c.startswith("stall_") and "Not Issued" not in c]
    print(f"total samples {total:.0f}")
    for r in sorted(body, key=lambda r: -num(r[samples]))[:args.top]:
        reasons = sorted(((num(r[i]), hdr[i]) for i in stalls), reverse=True)[:3]
        print(f"{100 * num(r[samples]) / max(total, 1):5.1f}%  {r[src][:70]:70s}  "
              + ", ".join(f"{h[6:]}={v:.0f}" for v, h in reasons if v))
    print("stall reasons over the kernel:")
    for v, h in sorted(((sum(num(r[i]) for r in body), hdr[i]) for i in stalls), reverse=True):
        if v:
            print(f"  {h[6:]:20s} {100 * v / max(total, 1):5.1f}%")
    if args.spans:
        executed = ci["Instructions Executed"]
        print(f"spans of {args.spans} instructions with at least 0.2% of the samples (first instruction, "
              "samples, warp instructions executed, kinds):")
        for s in range(0, len(body), args.spans):
            span = body[s:s + args.spans]
            share = sum(num(r[samples]) for r in span) / max(total, 1)
            if share < 0.002:
                continue
            kinds = {}
            for r in span:
                k = opcode(r[src])
                if k in KINDS:
                    kinds[k] = kinds.get(k, 0) + 1
            print(f"  {s:5d} {100 * share:5.1f}% {sum(num(r[executed]) for r in span) / 1e6:8.1f}M  "
                  + " ".join(f"{k}:{n}" for k, n in kinds.items()))


if __name__ == "__main__":
    main()
