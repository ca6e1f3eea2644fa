"""A failing file system: a full disk (a tiny tmpfs) while writing shards, checkpoints, models
and metrics; a read-only folder; an output path under a regular file; and a failure between
the renames that commit a stage's outputs. The old outputs stay as they were, nothing is left
half-written, and the message names the output."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from helpers.faults import (
    cli,
    commit_fails_at,
    expect_bad_input,
    leftovers,
    raises_bad_input,
    read_only_fs,
    small_fs,
    snapshot,
)
from helpers.tiny import write_params

from gptpipe.errors import BadInput
from gptpipe.fsutil import atomic_dir, staged_outputs, write_json
from gptpipe.model.folder import save_model
from gptpipe.model.gpt import GPT, GPTConfig


def test_full_disk_while_writing_a_file(tmp_path):
    with small_fs(tmp_path / "disk", "16k") as disk:
        target = disk / "metrics.json"
        raises_bad_input(
            lambda: write_json(target, {"x": "y" * 100_000}), "metrics.json", "no space"
        )
        assert not target.exists() and leftovers(disk) == []


def test_full_disk_while_saving_a_model_keeps_the_old_one(pipeline, tmp_path):
    with small_fs(tmp_path / "disk", "96k") as disk:
        out = disk / "model"
        shutil.copytree(pipeline["model"], out)
        before = snapshot(out)
        bigger = GPT(GPTConfig(vocab_size=257, block_size=16, n_layer=2, n_head=2, n_embd=64))
        raises_bad_input(
            lambda: save_model(out, bigger, pipeline["tokenizer"]), "model", "no space"
        )
        assert snapshot(out) == before and leftovers(disk) == []


def test_full_disk_while_sharding(pipeline, tmp_path):
    (tmp_path / "params.yaml").write_text(
        "shard:\n  shard_tokens: 4096\n  split_chunk_tokens: 64\n"
    )
    with small_fs(tmp_path / "disk", "8k") as disk:
        args = ["shard", "--params", "params.yaml", "--corpus", pipeline["corpus"]]
        args += ["--tokenizer", pipeline["tokenizer"], "--out", disk / "shards"]
        expect_bad_input(cli(args, tmp_path), "shards", "no space")
        assert not (disk / "shards").exists() and leftovers(disk) == []


def _pretrain_args(pipeline, tmp_path, **where):
    paths = {
        "out": tmp_path / "models" / "pretrain",
        "metrics": tmp_path / "metrics" / "pretrain.json",
        "plots": tmp_path / "plots" / "pretrain",
        "checkpoints": tmp_path / "checkpoints",
    } | where
    args = ["pretrain", "--shards", pipeline["shards"], "--tokenizer", pipeline["tokenizer"]]
    for key, path in paths.items():
        args += [f"--{key}", path]
    return args, paths


def test_full_disk_while_checkpointing_writes_no_outputs(pipeline, tmp_path):
    write_params(tmp_path / "params.yaml", max_steps=4, checkpoint_interval=2, eval_interval=4)
    with small_fs(tmp_path / "disk", "32k") as disk:
        args, paths = _pretrain_args(pipeline, tmp_path, checkpoints=disk / "ckpt")
        expect_bad_input(cli(args, tmp_path), "ckpt", "no space")
        assert leftovers(disk) == []
    for key in ("out", "metrics", "plots"):
        assert not paths[key].exists(), key  # the stage's outputs: none, not some
    assert leftovers(tmp_path) == []


def test_full_disk_while_writing_the_model_writes_no_metrics_or_curves(pipeline, tmp_path):
    write_params(tmp_path / "params.yaml", max_steps=4, eval_interval=4)
    with small_fs(tmp_path / "disk", "32k") as disk:
        args, paths = _pretrain_args(pipeline, tmp_path, out=disk / "model")
        expect_bad_input(cli(args, tmp_path), "model", "no space")
        assert not (disk / "model").exists() and leftovers(disk) == []
    assert not paths["metrics"].exists() and not paths["plots"].exists()
    assert leftovers(tmp_path) == []


def test_read_only_folder(tmp_path):
    with read_only_fs(tmp_path / "ro") as ro:
        raises_bad_input(lambda: write_json(ro / "m.json", {}), "m.json", "read-only")
        args = ["report", "--params", "params.yaml", "--out", ro / "report.md"]
        args += ["--figures", ro / "figures", "--metrics", tmp_path / "none"]
        result = cli(args, tmp_path)
        expect_bad_input(result, str(ro), "read-only")


def test_output_under_a_regular_file(pipeline, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    (tmp_path / "params.yaml").write_text("tokenizer:\n  vocab_size: 260\n")
    args = ["tokenizer", "--params", "params.yaml", "--corpus", pipeline["corpus"]]
    expect_bad_input(cli([*args, "--out", blocker / "tok"], tmp_path), "blocker")
    assert blocker.read_text() == "a file, not a folder"


def _two_outputs(tmp_path):
    a, b = tmp_path / "model", tmp_path / "metrics.json"
    a.mkdir()
    (a / "weights").write_text("old weights")
    b.write_text("old metrics")
    return a, b


@pytest.mark.parametrize("step", [1, 2, 3, 4], ids=["aside-1", "aside-2", "placed-1", "placed-2"])
def test_failure_between_the_renames_of_a_commit_keeps_the_old_outputs(tmp_path, step):
    a, b = _two_outputs(tmp_path)
    before = snapshot(tmp_path)
    with (
        commit_fails_at(step) as steps,
        pytest.raises(BadInput, match="injected"),
        staged_outputs(a, b) as (new_a, new_b),
    ):
        new_a.mkdir()
        (new_a / "weights").write_text("new weights")
        new_b.write_text("new metrics")
    assert len(steps) == step
    assert snapshot(tmp_path) == before and leftovers(tmp_path) == []


def test_ctrl_c_inside_a_stage_keeps_the_old_outputs(tmp_path):
    a, b = _two_outputs(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(KeyboardInterrupt), staged_outputs(a, b) as (_, new_b):
        new_b.write_text("new metrics")
        raise KeyboardInterrupt
    assert snapshot(tmp_path) == before and leftovers(tmp_path) == []


def test_killed_between_the_renames_then_the_next_run_recovers(tmp_path):
    """A real SIGKILL at the seam (the process dies there); the next commit brings the old
    output back, removes the staged leftovers, and then writes normally."""
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    code = f"""
import os, signal
from pathlib import Path
from gptpipe import fsutil
fsutil._commit_seam = lambda step: os.kill(os.getpid(), signal.SIGKILL)
with fsutil.atomic_dir(Path({str(target)!r})) as tmp:
    (tmp / "weights").write_text("new")
"""
    done = subprocess.run([sys.executable, "-c", code], check=False)
    assert done.returncode == -9
    assert not target.exists()  # the old one set aside, the new one not yet in
    with atomic_dir(target) as tmp:
        assert (target / "weights").read_text() == "old"  # recovered before writing
        (tmp / "weights").write_text("newer")
    assert (target / "weights").read_text() == "newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
