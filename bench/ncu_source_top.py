"""The per-instruction CSV of `ncu --page source --csv --print-source sass` (bench/ncu_source.sh):
load() gives its header and rows; run as a script, it prints the instructions with the most
warp-state samples and their top stall reasons.
  python3 bench/ncu_source_top.py ncu_source.csv [N]"""
import csv
import sys


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


def main():
    hdr, body, _, samples, src, total = load(sys.argv[1])
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 45
    stalls = [i for i, c in enumerate(hdr) if c.startswith("stall_") and "Not Issued" not in c]
    print(f"total samples {total:.0f}")
    for r in sorted(body, key=lambda r: -num(r[samples]))[:top]:
        reasons = sorted(((num(r[i]), hdr[i]) for i in stalls), reverse=True)[:3]
        print(f"{100 * num(r[samples]) / max(total, 1):5.1f}%  {r[src][:70]:70s}  "
              + ", ".join(f"{h[6:]}={v:.0f}" for v, h in reasons if v))


if __name__ == "__main__":
    main()
