"""The pretrain stage: real shards in, model + metrics + curves out; errors; Ctrl-C/resume."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import said
from helpers.signals import default_sigint
from helpers.tiny import MODEL, TRAIN, byte_tokenizer, shard_workdir, write_params
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.config import ModelConfig, PretrainConfig
from gptpipe.model.folder import load_model
from gptpipe.stages import pretrain
from gptpipe.tokenizer.folder import load_tokenizer
from gptpipe.train.recipe import TrainingPaths
from gptpipe.train.state import read_checkpoint_state

runner = CliRunner()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """tokenizer + shards made by the real tokenizer/shard code."""
    return shard_workdir(tmp_path_factory.mktemp("pretrain"))


def test_run_trains_and_writes_model_metrics_and_curves(workdir, tmp_path):
    paths = TrainingPaths(
        tmp_path / "model", tmp_path / "metrics.json", tmp_path / "plots", tmp_path / "ckpt"
    )
    metrics = pretrain.run(
        ModelConfig(**MODEL),
        PretrainConfig(**TRAIN),
        workdir / "shards",
        workdir / "tokenizer",
        paths,
    )
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == {"pretrain": {"val_loss": pytest.approx(metrics["val_loss"])}}
    assert metrics["steps"] == 40 and metrics["tokens"] == 40 * 8 * 32
    assert metrics["val_loss"] < 0.6 * math.log(257)  # well below uniform guessing
    assert metrics["val_perplexity"] == pytest.approx(math.exp(metrics["val_loss"]))
    assert metrics["params_total"] - metrics["params_non_embedding"] == 32 * 32  # wpe
    assert metrics["tokens_per_s"] > 0 and metrics["seconds"] > 0
    assert metrics["wall_seconds"] >= metrics["seconds"]  # the stage's, with the training loop
    model, info = load_model(tmp_path / "model")
    assert info.config.vocab_size == 257 and info.config.block_size == 32
    assert info.meta["stage"] == "pretrain" and info.meta["steps"] == 40
    assert model.num_params(non_embedding=False) == metrics["params_total"]
    assert load_tokenizer(tmp_path / "model").encode("hi") == [104, 105]
    with open(tmp_path / "plots" / "train.csv", newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [10, 20, 30, 40]
    with open(tmp_path / "plots" / "val.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [20, 40]
    assert float(rows[-1]["val_loss"]) == pytest.approx(metrics["val_loss"])
    assert not (tmp_path / "ckpt").exists()


def test_cli_runs_with_overrides_and_is_deterministic(workdir, tmp_path):
    params = write_params(tmp_path / "params.yaml")
    weights = []
    for name in ("a", "b"):
        args = [
            "pretrain",
            "--params",
            str(params),
            "-S",
            "pretrain.max_steps=6",
            "-S",
            "pretrain.eval_interval=3",
            "--shards",
            str(workdir / "shards"),
            "--tokenizer",
            str(workdir / "tokenizer"),
            "--out",
            str(tmp_path / name),
            "--metrics",
            str(tmp_path / f"{name}.json"),
            "--plots",
            str(tmp_path / f"p{name}"),
            "--checkpoints",
            str(tmp_path / f"c{name}"),
            "--details",
            str(tmp_path / f"{name}.run.json"),
        ]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert result.stdout == ""  # summaries and progress go to stderr; stdout is for results
        assert json.loads((tmp_path / f"{name}.run.json").read_text())["steps"] == 6
        weights.append((tmp_path / name / "model.safetensors").read_bytes())
    assert weights[0] == weights[1]  # same config: bit-identical weights


def test_cli_ends_with_one_line_saying_what_it_wrote(workdir, tmp_path):
    """Run by hand it replaces the pipeline's model, metrics, curves and run details: its last
    line on stderr says so."""
    paths = {"--out": tmp_path / "m", "--metrics": tmp_path / "m.json"}
    paths |= {"--plots": tmp_path / "plots", "--details": tmp_path / "run.json"}
    args = ["pretrain", "--params", str(write_params(tmp_path / "params.yaml", max_steps=2))]
    args += ["--shards", str(workdir / "shards"), "--tokenizer", str(workdir / "tokenizer")]
    args += ["--checkpoints", str(tmp_path / "ckpt")]
    result = runner.invoke(app, [*args, *said.options(paths)])
    assert result.exit_code == 0, result.output
    assert said.wrote(result.stderr, "pretrain") == ("", said.paths(*paths.values()))


def test_tokenizer_mismatch_and_missing_shards_exit_2(workdir, tmp_path):
    other = byte_tokenizer(tmp_path / "other")
    meta = json.loads((other / "tokenizer.json").read_text())
    (other / "tokenizer.json").write_text(json.dumps(meta | {"kind": "changed"}))
    common = [
        "pretrain",
        "--params",
        str(write_params(tmp_path / "p.yaml")),
        "--out",
        str(tmp_path / "m"),
        "--metrics",
        str(tmp_path / "m.json"),
        "--plots",
        str(tmp_path / "plots"),
        "--details",
        str(tmp_path / "run.json"),
    ]
    result = runner.invoke(
        app, [*common, "--shards", str(workdir / "shards"), "--tokenizer", str(other)]
    )
    assert result.exit_code == 2
    assert "tokenizer_hash" in result.stderr and str(other) in result.stderr
    result = runner.invoke(
        app,
        [*common, "--shards", str(tmp_path / "nope"), "--tokenizer", str(workdir / "tokenizer")],
    )
    assert result.exit_code == 2 and "manifest.json" in result.stderr
    result = runner.invoke(
        app,
        [
            *common,
            "--shards",
            str(workdir / "shards"),
            "--tokenizer",
            str(workdir / "tokenizer"),
            "-S",
            "pretrain.learning_rate=-1",
        ],
    )
    assert result.exit_code == 2 and "pretrain.learning_rate" in result.stderr
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.json").exists()


def _staged_curve(curve: Path) -> Path | None:
    """The curve training is writing: in the plots folder's staged copy until training ends."""
    return next(curve.parent.parent.glob(f".{curve.parent.name}.*.tmp/{curve.name}"), None)


def _interrupt(cmd: list[str], cwd: Path, sig: int, curve: Path) -> tuple[int, str]:
    """Start the command, wait until training writes its (staged) curve, send `sig`, return
    (rc, stderr)."""
    env = {**os.environ, "COLUMNS": "120"}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, text=True, preexec_fn=default_sigint, **pipes)
    deadline = time.monotonic() + 60
    while _staged_curve(curve) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_ctrl_c_saves_a_checkpoint_exits_130_and_the_next_run_resumes(workdir, tmp_path):
    write_params(tmp_path / "params.yaml", max_steps=100_000, log_interval=1, eval_interval=1000)
    cmd = [
        sys.executable,
        "-m",
        "gptpipe",
        "pretrain",
        "--shards",
        str(workdir / "shards"),
        "--tokenizer",
        str(workdir / "tokenizer"),
    ]
    curve = tmp_path / "reports" / "plots" / "pretrain" / "train.csv"
    checkpoints = tmp_path / "checkpoints" / "pretrain"

    rc, err = _interrupt(cmd, tmp_path, signal.SIGINT, curve)
    assert rc == 130, err
    assert "interrupted" in err and "Traceback" not in err
    first = read_checkpoint_state(checkpoints)
    assert first is not None and first["step"] >= 1
    assert not (tmp_path / "models" / "pretrain").exists()  # no half-written model
    assert not curve.exists() and _staged_curve(curve) is None  # no curves without a model
    rc, err = _interrupt(cmd, tmp_path, signal.SIGTERM, curve)
    assert rc == 130, err
    assert f"resuming from the checkpoint at step {first['step']}" in " ".join(err.split())
    second = read_checkpoint_state(checkpoints)
    assert second["step"] > first["step"]
    assert second["train_rows"][: len(first["train_rows"])] == first["train_rows"]
