"""The training benchmark keeps working: its quick mode runs both sides (each measurement a
worker process) and returns and writes the results."""

import json

import pytest

from benchmarks import bench_train


def test_quick_mode_measures_both_sides_and_the_peaks(tmp_path, capsys):
    pytest.importorskip("transformers")
    out = tmp_path / "train.json"
    results = bench_train.main(["--quick", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert results["peaks_gflops"]["float32"] > 0 and results["peaks_gflops"]["bfloat16"] > 0
    rows = results["configs"]["quick"]
    assert set(rows) == {"hf", "ours-default"}
    for row in rows.values():
        assert row["tokens_per_s"] > 0 and 0 < row["mfu_fp32_peak"]
    assert "MFU fp32" in capsys.readouterr().out
