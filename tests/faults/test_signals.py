"""Signals and numeric faults: SIGINT and SIGKILL during sharding and during training (real
subprocesses killed mid-run), then a rerun that resumes (bit-identical weights after SIGKILL
of training); a loss that turns NaN at a given step."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers.faults import leftovers, raises_bad_input
from helpers.signals import default_sigint
from helpers.tiny import MODEL, TRAIN, write_params
from safetensors.torch import load_file

from gptpipe.config import ModelConfig, PretrainConfig, ShardConfig
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.stages import pretrain, shard
from gptpipe.train.loop import train
from gptpipe.train.losses import lm_loss
from gptpipe.train.recipe import TrainingPaths
from gptpipe.train.state import read_checkpoint_state

STEPS = dict(max_steps=20, checkpoint_interval=4, eval_interval=20, log_interval=4)


def _start(args: list[str | Path], cwd: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "gptpipe", *map(str, args)]
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint
    )


def _signal_when(proc: subprocess.Popen[str], ready: Callable[[], bool], sig: int) -> str:
    """Interrupt-at-step: send `sig` once `ready()` holds; return stderr."""
    deadline = time.monotonic() + 60
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, f"finished before the signal: {proc.stderr.read()}"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return err


def _pretrain_paths(tmp_path: Path) -> dict[str, Path]:
    return {
        "out": tmp_path / "model",
        "metrics": tmp_path / "metrics.json",
        "plots": tmp_path / "plots",
        "checkpoints": tmp_path / "ckpt",
    }


def _run_pretrain(pipeline, paths: dict[str, Path]) -> dict:
    cfg = PretrainConfig(**(TRAIN | STEPS))
    return pretrain.run(
        ModelConfig(**MODEL), cfg, pipeline["shards"], pipeline["tokenizer"], TrainingPaths(**paths)
    )


def _cli_args(pipeline, paths: dict[str, Path]) -> list[str | Path]:
    args: list[str | Path] = ["pretrain", "--params", "params.yaml"]
    args += ["--shards", pipeline["shards"], "--tokenizer", pipeline["tokenizer"]]
    args += ["--out", paths["out"], "--metrics", paths["metrics"]]
    return [*args, "--plots", paths["plots"], "--checkpoints", paths["checkpoints"]]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_training_killed_then_rerun_resumes_to_identical_weights(pipeline, tmp_path, capfd, sig):
    killed = tmp_path / "killed"
    killed.mkdir()
    write_params(killed / "params.yaml", **STEPS)
    paths = _pretrain_paths(killed)
    proc = _start(_cli_args(pipeline, paths), killed)

    def checkpointed() -> bool:
        state = read_checkpoint_state(paths["checkpoints"])
        return state is not None and state["step"] >= 4

    err = _signal_when(proc, checkpointed, sig)
    if sig == signal.SIGKILL:
        assert proc.returncode == -9
    else:
        assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    for key in ("out", "metrics", "plots"):
        assert not paths[key].exists(), key  # no outputs from the interrupted run
    stopped_at = read_checkpoint_state(paths["checkpoints"])["step"]

    capfd.readouterr()
    _run_pretrain(pipeline, paths)  # the rerun
    said = " ".join(capfd.readouterr().err.split())
    assert f"resuming from the checkpoint at step {stopped_at}" in said
    assert leftovers(killed) == [] and not paths["checkpoints"].exists()
    if sig != signal.SIGKILL:
        return
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _run_pretrain(pipeline, _pretrain_paths(fresh))
    a = load_file(paths["out"] / "model.safetensors")
    b = load_file(fresh / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory) -> Path:
    """A corpus large enough that sharding it takes a while (seconds: 10M tokens, whose
    repeated words a fast CPU tokenizes at over 10M tokens a second)."""
    path = tmp_path_factory.mktemp("big") / "corpus.txt"
    line = "the cat sees fish and my friend likes tea. " * 20 + "\n"
    with path.open("w") as fh:
        for i in range(12_000):
            fh.write(line if i % 50 else line + "<|endoftext|>\n")
    return path


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_sharding_interrupted_then_rerun(pipeline, big_corpus, tmp_path, sig):
    (tmp_path / "params.yaml").write_text("shard:\n  shard_tokens: 50000\n  workers: 1\n")
    out = tmp_path / "shards"
    args = ["shard", "--corpus", big_corpus, "--tokenizer", pipeline["tokenizer"], "--out", out]
    proc = _start(args, tmp_path)
    staged = lambda: any(tmp_path.glob(".shards.*.tmp/*.arrow"))  # noqa: E731
    err = _signal_when(proc, staged, sig)
    assert proc.returncode == (130 if sig == signal.SIGINT else -9), err
    assert "Traceback" not in err and not out.exists()
    if sig == signal.SIGINT:
        assert leftovers(tmp_path) == []
    cfg = ShardConfig(shard_tokens=50_000, workers=1)
    manifest = shard.run(cfg, big_corpus, pipeline["tokenizer"], out, show_progress=False)
    assert manifest["splits"]["train"]["tokens"] > 0
    assert leftovers(tmp_path) == []  # a killed run's staged folder is cleared by the rerun


def _nan_at(step: int):
    calls = {"n": 0}

    def loss_of(model, batch):
        calls["n"] += 1
        loss = lm_loss(model, batch)
        return loss * math.nan if calls["n"] == step else loss

    return loss_of


@pytest.mark.parametrize("step", [1, 3], ids=["nan-at-step-1", "nan-at-step-3"])
def test_loss_turning_nan_at_a_step_is_reported_with_the_step(tmp_path, step):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=16))
    cfg = PretrainConfig(**(TRAIN | {"max_steps": 6, "checkpoint_interval": 2, "eval_interval": 6}))
    x = torch.randint(0, 64, (8, 9))
    raises_bad_input(
        lambda: train(
            model,
            cfg,
            batch_at=lambda i: (x[:, :-1], x[:, 1:]),
            loss_of=_nan_at(step),
            validate=lambda m: {"val_loss": 1.0},
            plot_dir=tmp_path / "plots",
            checkpoint_dir=tmp_path / "ckpt",
        ),
        f"step {step}" if step > 1 else "step",
    )
    kept = read_checkpoint_state(tmp_path / "ckpt")
    assert (kept is None) == (step <= 2)  # the last good checkpoint stays for a rerun
