"""base.source other than `pretrain`: the pretrain stage trains nothing, says so in one line,
and still writes every output dvc.yaml declares (a skipped marker, empty metrics, header-only
curves, run details), so the DAG stays static."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from helpers import said
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.model.skipped import MARKER, read_skipped

runner = CliRunner()


def test_pretrain_with_another_base_source_skips_training(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": {"source": "gpt2"}}))
    out, plots = tmp_path / "model", tmp_path / "plots"
    args = ["pretrain", "--params", str(params), "--out", str(out)]
    args += ["--metrics", str(tmp_path / "m.json"), "--plots", str(plots)]
    args += ["--details", str(tmp_path / "run.json"), "--checkpoints", str(tmp_path / "ckpt")]
    # No shards or tokenizer exist: a stage that tried to train would fail on them.
    args += ["--shards", str(tmp_path / "none"), "--tokenizer", str(tmp_path / "none")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "skipped" in lines[0] and "base.source is 'gpt2'" in lines[0]
    assert result.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == [MARKER]
    marker = read_skipped(out)
    assert marker is not None and marker["base_source"] == "gpt2"
    assert json.loads((tmp_path / "m.json").read_text()) == {}
    details = json.loads((tmp_path / "run.json").read_text())
    assert details["skipped"] is True and details["base_source"] == "gpt2"
    assert 0 <= details["wall_seconds"] < 60  # the report's wall-time table lists it
    assert (plots / "train.csv").read_text().startswith("step,train_loss,")
    assert (plots / "val.csv").read_text() == "step,val_loss\n"
    assert not (tmp_path / "ckpt").exists()


def test_skipped_pretraining_says_what_it_wrote_in_its_one_line(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": {"source": "gpt2"}}))
    paths = {"--out": tmp_path / "model", "--metrics": tmp_path / "m.json"}
    paths |= {"--plots": tmp_path / "plots", "--details": tmp_path / "run.json"}
    args = ["pretrain", "--params", str(params), "--checkpoints", str(tmp_path / "ckpt")]
    result = runner.invoke(app, [*args, *said.options(paths)])
    assert result.exit_code == 0, result.output
    assert len(said.lines(result.stderr)) == 1
    summary, written = said.wrote(result.stderr, "pretrain")
    assert summary.startswith("skipped, nothing trained (base.source is 'gpt2'")
    assert written == said.paths(*paths.values())


def test_a_model_folder_is_not_a_skipped_marker(tmp_path: Path) -> None:
    assert read_skipped(tmp_path) is None
    (tmp_path / MARKER).write_text('{"skipped": false}')
    assert read_skipped(tmp_path) is None
