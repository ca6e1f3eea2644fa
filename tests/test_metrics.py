"""Headline metrics and run details: each stage's few DVC metrics under names unique across
the files, everything else in the run details, written together or not at all."""

import json

import pytest

from gptpipe.config import ClassifyConfig
from gptpipe.errors import BadInput
from gptpipe.metrics import HEADLINE, headline, ran_with, write_metrics


def test_headline_picks_the_stage_figures_under_its_namespace() -> None:
    results = {"val_loss": 1.5, "train_loss": 1.2, "steps": 10}
    assert headline("pretrain", results) == {"pretrain": {"val_loss": 1.5}}
    assert headline("instruct", {"test_rougeL": 0.25, "test_loss": 3.0}) == {
        "instruct": {"rougeL": 0.25}
    }
    assert headline("evaluate", {"bits_per_byte": 1.9, "perplexity": 9.0}, "base") == {
        "base": {"bits_per_byte": 1.9}
    }
    assert headline("classify", {}) == {}  # nothing produced: an empty metrics file
    with pytest.raises(ValueError, match="namespace"):
        headline("evaluate", {"bits_per_byte": 1.9})


def test_headline_names_are_unique_across_the_metrics_files() -> None:
    """DVC heads a column with the bare name only when no other metrics file has it."""
    names = [f"{space or 'base'}.{name}" for space, names in HEADLINE.values() for name in names]
    assert len(names) == len(set(names)) == 4


def test_metrics_and_details_are_written_together(tmp_path) -> None:
    metrics, details = tmp_path / "m.json", tmp_path / "runs" / "d.json"
    record = {"val_loss": 1.5, "wall_seconds": 3.0} | ran_with(classify=ClassifyConfig())
    write_metrics(metrics, {"pretrain": {"val_loss": 1.5}}, details, record)
    assert json.loads(metrics.read_text()) == {"pretrain": {"val_loss": 1.5}}
    written = json.loads(details.read_text())
    assert written["wall_seconds"] == 3.0
    assert written["params"]["classify"]["epochs"] == 5.0  # as the stage ran it


def test_a_details_file_that_cannot_be_written_leaves_the_old_metrics(tmp_path) -> None:
    metrics = tmp_path / "m.json"
    metrics.write_text('{"val_loss": 9.0}')
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the details folder belongs")
    with pytest.raises(BadInput, match="runs"):
        write_metrics(metrics, {"val_loss": 1.5}, blocker / "d.json", {"wall_seconds": 3.0})
    assert json.loads(metrics.read_text()) == {"val_loss": 9.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "runs"]
