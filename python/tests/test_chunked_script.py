"""The KV-cache harness (bench/chunked_prefill.py) runs every mode on the CPU: a check that the
script works and that its paged rows are the contiguous call's, not a measurement."""
import json
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "bench" / "chunked_prefill.py"


def test_every_mode_runs_and_pages_give_the_one_call(tmp_path):
    out = tmp_path / "chunked.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--tokens", "1000", "--chunks", "256", "512", "--page-sizes",
                          "16", "128", "256", "--heads", "4", "2", "--dim", "64", "--repeats", "2", "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {r["mode"]: r for r in json.loads(out.read_text())["rows"]}
    pages = [f"{kind}, pages of {p}" for p in (16, 128, 256) for kind in ("paged", "dense")]
    assert list(rows) == ["dense", "one call", "chunks of 256", "chunks of 512"] + pages
    assert all(r["seconds"] > 0 for r in rows.values())
    for p in (16, 128, 256):
        assert rows[f"paged, pages of {p}"]["error_vs_one_call"] == 0.0  # the same masks and sums
        assert rows[f"dense, pages of {p}"]["error_vs_dense"] < 1e-6
        assert rows[f"paged, pages of {p}"]["time_vs_one_call"] > 0
    for c in (256, 512):
        assert rows[f"chunks of {c}"]["error_vs_one_call"] < 0.1  # earlier chunks budget from their own queries
