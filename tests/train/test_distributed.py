"""DistributedDataParallel through torchrun: 2 gloo processes train like 1 with the same batch."""

import csv
import subprocess
import sys

import pytest
import torch
from helpers.tiny import shard_workdir, write_params
from safetensors.torch import load_file

from gptpipe.train.distributed import torchrun_argv


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Tokenizer + shards made by the real code (as test_pretrain_stage's fixture)."""
    return shard_workdir(tmp_path_factory.mktemp("shards"))


pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch built without distributed"
)


def pretrain(workdir, root, *overrides):
    cmd = [sys.executable, "-m", "gptpipe", "pretrain", "--shards", str(workdir / "shards")]
    cmd += ["--tokenizer", str(workdir / "tokenizer")]
    for item in overrides:
        cmd += ["-S", item]
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=240)


def rows(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_two_gloo_processes_give_the_loss_curve_of_one_with_the_same_global_batch(
    workdir, tmp_path
):
    common = dict(max_steps=12, log_interval=1, eval_interval=6, dtype="float32", threads=1)
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        root.mkdir()
        write_params(root / "params.yaml", **common)
    single = pretrain(workdir, one, "pretrain.batch_size=8")
    assert single.returncode == 0, single.stderr
    double = pretrain(workdir, two, "pretrain.batch_size=4", "pretrain.nproc=2")
    assert double.returncode == 0, double.stderr

    plots = "reports/plots/pretrain"
    for name, column in (("train.csv", "train_loss"), ("val.csv", "val_loss")):
        a, b = rows(one / plots / name), rows(two / plots / name)
        assert [r["step"] for r in a] == [r["step"] for r in b]
        for x, y in zip(a, b, strict=True):
            assert float(x[column]) == pytest.approx(float(y[column]), abs=1e-5), (name, x, y)
    wa = load_file(str(one / "models/pretrain/model.safetensors"))
    wb = load_file(str(two / "models/pretrain/model.safetensors"))
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5, msg=name)
    # the process count is a run detail, beside the metrics
    assert '"processes": 1' in (one / "reports/runs/pretrain.json").read_text()
    assert '"processes": 2' in (two / "reports/runs/pretrain.json").read_text()
    assert not (two / "checkpoints").exists() or not any((two / "checkpoints").iterdir())


def test_the_stage_relaunches_itself_under_torchrun():
    argv = torchrun_argv(3, ["pretrain", "-S", "pretrain.nproc=3"])
    assert argv[:4] == [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    assert "--nproc_per_node=3" in argv
    assert argv[-3:] == ["pretrain", "-S", "pretrain.nproc=3"]
