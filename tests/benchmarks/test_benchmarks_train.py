"""The training benchmark keeps working: its quick mode runs both sides and writes results."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_train.py"


def test_quick_mode_measures_both_sides_and_the_peaks(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "train.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    assert results["peaks_gflops"]["float32"] > 0 and results["peaks_gflops"]["bfloat16"] > 0
    rows = results["configs"]["quick"]
    assert set(rows) == {"hf", "ours-default"}
    for row in rows.values():
        assert row["tokens_per_s"] > 0 and 0 < row["mfu_fp32_peak"]
    assert "MFU fp32" in done.stdout
