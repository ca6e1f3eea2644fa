"""Headline metrics and run details: split by key, written together or not at all."""

import json

import pytest

from gptpipe.errors import BadInput
from gptpipe.metrics import write_metrics


def test_metrics_and_details_are_split_and_written_together(tmp_path):
    metrics, details = tmp_path / "m.json", tmp_path / "runs" / "d.json"
    write_metrics(metrics, {"val_loss": 1.5, "wall_seconds": 3.0}, details)
    assert json.loads(metrics.read_text()) == {"val_loss": 1.5}
    assert json.loads(details.read_text()) == {"wall_seconds": 3.0}


def test_a_details_file_that_cannot_be_written_leaves_the_old_metrics(tmp_path):
    metrics = tmp_path / "m.json"
    metrics.write_text('{"val_loss": 9.0}')
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the details folder belongs")
    with pytest.raises(BadInput, match="runs"):
        write_metrics(metrics, {"val_loss": 1.5, "wall_seconds": 3.0}, blocker / "d.json")
    assert json.loads(metrics.read_text()) == {"val_loss": 9.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "runs"]
