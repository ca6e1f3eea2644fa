"""Fully sharded data parallel (FSDP2) through torchrun: 2 gloo processes train like 1 with the
same global batch, resume after an interruption, write only from rank 0, save a model folder
`gptpipe generate` loads; and the memory per process `gptpipe info` states for each strategy."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.signals import sigterm_after_checkpoint
from helpers.tiny import shard_workdir, write_params
from safetensors.torch import load_file
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.config import ModelConfig, training_bytes
from gptpipe.model.gpt import GPTConfig
from gptpipe.train.memory import training_memory

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch built without distributed"
)
runner = CliRunner()
PLOTS = Path("reports/plots/pretrain")
WEIGHTS = Path("models/pretrain/model.safetensors")
# grad_accum 2: FSDP's reduce-scatter of every micro-batch; keep best: the gathered best weights
SETTINGS = dict(max_steps=30, log_interval=1, eval_interval=10, dtype="float32", threads=1)
SETTINGS |= dict(grad_accum=2, keep="best", checkpoint_interval=0)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Tokenizer + shards made by the real code (as test_distributed's fixture)."""
    return shard_workdir(tmp_path_factory.mktemp("shards"))


def pretrain_argv(workdir, *overrides, launcher=()):
    cmd = [sys.executable, "-m", *launcher, "gptpipe", "pretrain"]
    cmd += ["--shards", str(workdir / "shards"), "--tokenizer", str(workdir / "tokenizer")]
    for item in overrides:
        cmd += ["-S", item]
    return cmd


FSDP = ("pretrain.batch_size=4", "pretrain.nproc=2", "pretrain.strategy=fsdp")
# fsdp runs start under torchrun (the stage's own relaunch is DDP's, test_distributed's): one
# Python process fewer to start on a busy CPU
TORCHRUN = ("torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m")


def pretrain(workdir, root, *overrides):
    launcher = TORCHRUN if "pretrain.strategy=fsdp" in overrides else ()
    argv = pretrain_argv(workdir, *overrides, launcher=launcher)
    return subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def runs(workdir, tmp_path_factory):
    """One process at batch 8 and two fsdp processes at batch 4 each, the same global batch."""
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("fsdp")
    for root in (one, two):
        write_params(root / "params.yaml", **SETTINGS)
    single = pretrain(workdir, one, "pretrain.batch_size=8")
    assert single.returncode == 0, single.stderr
    double = pretrain(workdir, two, *FSDP)
    assert double.returncode == 0, double.stderr
    return one, two


def rows(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_two_fsdp_processes_train_like_one_with_the_same_global_batch(runs):
    one, two = runs
    for name, column in (("train.csv", "train_loss"), ("val.csv", "val_loss")):
        a, b = rows(one / PLOTS / name), rows(two / PLOTS / name)
        assert [r["step"] for r in a] == [r["step"] for r in b]
        for x, y in zip(a, b, strict=True):
            assert float(x[column]) == pytest.approx(float(y[column]), abs=1e-5), (name, x, y)
    # the gradient norm before clipping, measured over the DTensor shards
    for x, y in zip(rows(one / PLOTS / "train.csv"), rows(two / PLOTS / "train.csv"), strict=True):
        assert float(x["grad_norm"]) == pytest.approx(float(y["grad_norm"]), rel=1e-4)
    wa, wb = load_file(str(one / WEIGHTS)), load_file(str(two / WEIGHTS))
    assert wa.keys() == wb.keys() and "lm_head.weight" not in wb  # whole, the tied head once
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5, msg=name)
    details = json.loads((two / "reports/runs/pretrain.json").read_text())
    assert details["processes"] == 2 and details["params"]["pretrain"]["strategy"] == "fsdp"


def test_only_rank_0_writes_and_generate_loads_the_fsdp_model(runs):
    one, two = runs
    assert files(two) == files(one)  # the same outputs, nothing from rank 1, no checkpoint left
    said = []
    for root in (one, two):
        args = ["generate", "--model", str(root / "models/pretrain"), "--prompt", "the cat"]
        result = runner.invoke(app, [*args, "--max-new-tokens", "8", "--temperature", "0"])
        assert result.exit_code == 0, result.output
        said.append(result.stdout)
    assert said[1] == said[0] and said[0].strip()  # the same greedy text as one process's


def test_an_fsdp_checkpoint_resumes_exactly_and_a_ddp_one_resumes_sharded(tmp_path):
    """The checkpoint round trip under fsdp, in one torchrun job of 2 gloo ranks
    (fsdp_checkpoint_worker.py says what it checks)."""
    script = Path(__file__).with_name("fsdp_checkpoint_worker.py")
    argv = [sys.executable, "-m", *TORCHRUN[:-1], str(script), str(tmp_path)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rank 0 ok" in done.stdout and "rank 1 ok" in done.stdout


@pytest.mark.slow
def test_an_interrupted_fsdp_run_resumes_to_the_uninterrupted_weights(workdir, runs, tmp_path):
    _, reference = runs
    write_params(tmp_path / "params.yaml", **SETTINGS | {"checkpoint_interval": 1})
    # SIGTERM to torchrun reaches each rank once: they stop at the next step boundary and
    # save a checkpoint together (the shards gathered, rank 0 writing)
    argv = pretrain_argv(workdir, *FSDP, launcher=TORCHRUN)
    _, stopped = sigterm_after_checkpoint(
        argv, tmp_path, tmp_path / "checkpoints" / "pretrain", tmp_path / "interrupted.log"
    )
    assert stopped is not None, (tmp_path / "interrupted.log").read_text()[-2000:]
    assert 3 <= stopped["step"] < SETTINGS["max_steps"]
    assert not (tmp_path / WEIGHTS).exists()
    (tmp_path / "interrupted.log").unlink()

    again = pretrain(workdir, tmp_path, *FSDP)
    assert again.returncode == 0, again.stderr
    said = " ".join(again.stderr.split())
    assert f"resuming from the checkpoint at step {stopped['step']}" in said
    a, b = load_file(str(reference / WEIGHTS)), load_file(str(tmp_path / WEIGHTS))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    assert rows(reference / PLOTS / "val.csv") == rows(tmp_path / PLOTS / "val.csv")
    assert not (tmp_path / "checkpoints" / "pretrain").exists()


def test_a_bad_strategy_exits_2_naming_the_key(tmp_path):
    params = write_params(tmp_path / "params.yaml")
    result = runner.invoke(
        app, ["pretrain", "--params", str(params), "-S", "pretrain.strategy=zero3"]
    )
    assert result.exit_code == 2
    assert "pretrain.strategy" in result.stderr and "zero3" in result.stderr


# --------------------------------------------------------------------------- memory per rank

TINY = GPTConfig(vocab_size=100, block_size=8, n_layer=2, n_head=2, n_embd=16)


def test_memory_per_process_by_hand_for_a_tiny_model():
    # by hand: a block is ln_1 (32) + c_attn (16*48+48) + c_proj (16*16+16) + ln_2 (32) +
    # c_fc (16*64+64) + c_proj (64*16+16) = 3,280; the root wte (1,600) + wpe (128) + ln_f (32)
    block, root = 32 + 816 + 272 + 32 + 1088 + 1040, 1600 + 128 + 32
    params = root + 2 * block  # 8,320
    # activations: 2 * tokens (2*8) * layers (2) * (34*16 + 5*2*8) + logits 8 * 16 * 100
    activations = 2 * 16 * 2 * (544 + 80) + 8 * 16 * 100  # 52,736
    ddp = training_memory(TINY, batch_size=2, nproc=4, strategy="ddp")
    assert ddp.to_dict() == {
        "weights": 4 * params,
        "gradients": 4 * params,
        "optimizer": 8 * params,
        "buffers": 4 * params,  # DDP's gradient buckets
        "activations": activations,
        "host": 0,  # the model itself trains: no plain copy waits on the host
        "total": 20 * params + activations,
    }
    fsdp = training_memory(TINY, batch_size=2, nproc=4, strategy="fsdp")
    shard = params // 4  # 2,080
    whole = 4 * (root + 2 * block) + 4 * (root + block)  # gathered weights, whole gradients
    assert fsdp.to_dict() == {
        "weights": 4 * shard,
        "gradients": 4 * shard,
        "optimizer": 8 * shard,
        "buffers": whole,
        "activations": activations,
        "host": 4 * params,  # the plain model each rank keeps while its shards train
        "total": 16 * shard + whole + activations,
    }
    # on the CPU that copy shares the memory the shards use; on CUDA it is the host's
    assert fsdp.on("cpu") == fsdp.total + 4 * params and fsdp.on("cuda") == fsdp.total
    assert ddp.on("cpu") == ddp.on("cuda") == ddp.total
    # one process trains alone under both, and that is what the stage checks before it starts
    alone = training_memory(TINY, batch_size=2, nproc=1, strategy="fsdp")
    assert alone == training_memory(TINY, batch_size=2, nproc=1, strategy="ddp")
    model = ModelConfig(block_size=8, n_layer=2, n_head=2, n_embd=16)
    assert alone.total == training_bytes(model, 100, 2)


def test_info_states_the_memory_per_process_of_each_strategy(runs, tmp_path):
    # GPT-2 XL's shape, 8 processes at batch 1: ddp replicates 16 bytes a parameter, fsdp not
    params = tmp_path / "params.yaml"
    params.write_text(
        "tokenizer:\n  kind: gpt2\nmodel:\n  block_size: 1024\n  n_layer: 48\n  n_head: 25\n"
        "  n_embd: 1600\npretrain:\n  batch_size: 1\n  nproc: 8\n"
    )
    result = runner.invoke(app, ["info", "--params", str(params), "--json"])
    assert result.exit_code == 0, result.output
    memory = json.loads(result.stdout)["memory"]
    assert (memory["nproc"], memory["batch_size"]) == (8, 1)
    xl = 1_557_611_200  # parameters, the tied head once
    ddp, fsdp = memory["ddp"], memory["fsdp"]
    assert (ddp["weights"], ddp["gradients"], ddp["optimizer"]) == (4 * xl, 4 * xl, 8 * xl)
    assert (fsdp["weights"], fsdp["optimizer"]) == (4 * xl // 8, 8 * xl // 8)
    assert ddp["activations"] == fsdp["activations"] > 0
    assert fsdp["total"] < ddp["total"] / 2
    assert (ddp["host"], fsdp["host"]) == (0, 4 * xl)
    # a model folder's, with the options; the table has a column per strategy
    model = runs[1] / "models/pretrain"
    result = runner.invoke(app, ["info", str(model), "--nproc", "2", "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    assert "Training memory per process: 2 process(es), batch_size 3" in result.stdout
    assert "ddp" in result.stdout and "fsdp" in result.stdout
    assert "Training memory" not in runner.invoke(app, ["info", str(model)]).stdout
    result = runner.invoke(app, ["info", "--params", str(params), "--batch-size", "0"])
    assert result.exit_code == 2 and "--batch-size" in result.stderr
