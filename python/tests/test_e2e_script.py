"""The end-to-end prefill harness (bench/e2e_prefill.py) runs on a tiny model, every mode, on
whichever device is present: a check that the script works, not a measurement."""
import json
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("transformers", reason="transformers is not installed")
SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "bench" / "e2e_prefill.py"


MODES = ["sdpa", "none", "dense", "proxyattn", "fixed-0.3"]


def test_tiny_model_every_mode_eager_and_compiled(tmp_path):
    """Every mode, then (--compile) every mode again with the MLPs, norms and rotary compiled: the
    rows come in both variants and the compiled model's prefill still goes through ProxyAttn. One
    run: the script's start and the compile are most of its time."""
    pytest.importorskip("torch._inductor", reason="torch.compile's inductor is not available")
    out = tmp_path / "e2e.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--lengths", "640", "--repeats", "1",
                          "--modes", *MODES, "--compile", "--json", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mode"], r["compiled"]) for r in rows] == [(m, c) for c in (False, True) for m in MODES]
    assert all(r["seconds"] > 0 for r in rows)
    for compiled in (False, True):
        density = {r["mode"]: r["density"] for r in rows if r["compiled"] == compiled}
        fixed = density["fixed-0.3"]
        assert 0.3 <= fixed < 0.7, fixed  # 5 blocks: sink + diagonal + 30% of each row, rounded up
        assert density["proxyattn"] == pytest.approx(1.0)  # min_budget_tokens keeps every block this short
    assert "compiled 8 modules" in run.stdout  # 2 layers x (MLP, 2 norms), the final norm, rotary
