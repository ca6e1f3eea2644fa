"""Exact resume: a real `gptpipe pretrain` killed with SIGKILL mid-run, then run again, ends
with bit-identical weights (and curves) to an uninterrupted run."""

import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers.tiny import shard_workdir, write_params
from safetensors.torch import load_file

from gptpipe.train.state import read_checkpoint_state, recover_checkpoint


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Tokenizer + shards made by the real code (as test_pretrain_stage's fixture)."""
    return shard_workdir(tmp_path_factory.mktemp("shards"))


def command(workdir):
    cmd = [sys.executable, "-m", "gptpipe", "pretrain", "--shards", str(workdir / "shards")]
    return [*cmd, "--tokenizer", str(workdir / "tokenizer")]


def test_kill_9_then_resume_gives_bit_identical_weights(workdir, tmp_path):
    # dropout exercises the saved RNG state; dtype auto is the default path (bf16 where native)
    settings = dict(max_steps=150, checkpoint_interval=5, log_interval=5, eval_interval=50)
    ref, run = tmp_path / "ref", tmp_path / "run"
    for root in (ref, run):
        root.mkdir()
        write_params(root / "params.yaml", **settings)
        text = (
            (root / "params.yaml").read_text().replace("n_embd: 32", "n_embd: 32\n  dropout: 0.1")
        )
        (root / "params.yaml").write_text(text)
    done = subprocess.run(command(workdir), cwd=ref, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr

    proc = subprocess.Popen(command(workdir), cwd=run, stderr=subprocess.PIPE, text=True)
    checkpoints = run / "checkpoints" / "pretrain"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        state = read_checkpoint_state(checkpoints)
        if state is not None and state["step"] >= 20:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # no handler, no last checkpoint: only the periodic one
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    recover_checkpoint(checkpoints)  # as the next run does, if the kill hit a replacement
    killed_at = read_checkpoint_state(checkpoints)["step"]
    assert 20 <= killed_at < 150
    assert not (run / "models" / "pretrain").exists()

    again = subprocess.run(command(workdir), cwd=run, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    assert f"resuming from the checkpoint at step {killed_at}" in " ".join(again.stderr.split())
    a = load_file(str(ref / "models/pretrain/model.safetensors"))
    b = load_file(str(run / "models/pretrain/model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    val = "reports/plots/pretrain/val.csv"
    assert (ref / val).read_text() == (run / val).read_text()
