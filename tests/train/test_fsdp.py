"""Fully sharded data parallel (FSDP2) through torchrun: 2 gloo processes train like 1 with the
same global batch, resume after an interruption, write only from rank 0, save a model folder
`gptpipe generate` loads; and the memory per process `gptpipe info` states for each strategy."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.tiny import byte_tokenizer, corpus_text, write_params
from safetensors.torch import load_file
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.config import ModelConfig, ShardConfig, training_bytes
from gptpipe.model.gpt import GPTConfig
from gptpipe.stages import shard
from gptpipe.train.memory import training_memory
from gptpipe.train.state import read_checkpoint_state

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
    root = tmp_path_factory.mktemp("shards")
    (root / "corpus.txt").write_text(corpus_text())
    byte_tokenizer(root / "tokenizer")
    config = ShardConfig(shard_tokens=4096, split_chunk_tokens=256)
    shard.run(config, root / "corpus.txt", root / "tokenizer", root / "shards", show_progress=False)
    return root


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


# The checkpoint round trip under fsdp, in one torchrun job of 2 gloo ranks: a sharded run
# saved after 2 steps and resumed into a fresh sharded model steps on exactly as the run that
# never stopped; a checkpoint saved by one plain process (DDP's format: a single process trains
# the whole batch) resumes sharded to the same weights within float rounding.
CHECKPOINT_WORKER = """
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from gptpipe.config import PretrainConfig
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.train.distributed import Placement, shard, whole_state
from gptpipe.train.loop import optimizer_step
from gptpipe.train.losses import lm_loss
from gptpipe.train.optim import lr_at, make_optimizer
from gptpipe.train.state import TrainState, load_checkpoint, save_checkpoint

dist.init_process_group("gloo")
root = Path(sys.argv[1])
cfg = PretrainConfig(max_steps=4, batch_size=2, warmup_steps=0, strategy="fsdp", dtype="float32")
sharded = Placement.of(cfg, torch.device("cpu"))
alone = Placement(torch.device("cpu"), "float32")
config = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)


def rank_batch(i, rank):
    g = torch.Generator().manual_seed(100 * i + rank)
    x = torch.randint(0, 64, (2, 16), generator=g)
    return x, torch.roll(x, -1, 1)


def whole_batch(i):
    parts = [rank_batch(i, r) for r in range(2)]
    return tuple(torch.cat(t) for t in zip(*parts))


def build(place):
    torch.manual_seed(0)
    model = shard(GPT(config), place)
    return model, make_optimizer(model, cfg)


def step(model, optimizer, s, place):
    batch_at = whole_batch if place is alone else (lambda i: rank_batch(i, sharded.rank))
    optimizer_step(model, optimizer, cfg, lr_at(s, cfg), s, batch_at, lm_loss, place=place)


a, opt_a = build(sharded)
for s in range(2):
    step(a, opt_a, s, sharded)
save_checkpoint(root / "fsdp", TrainState(step=2), a, opt_a, "key", write=sharded.main)
plain, opt_plain = build(alone)
for s in range(2):
    step(plain, opt_plain, s, alone)
if sharded.main:  # DDP's rank 0 alone writes the whole state
    save_checkpoint(root / "plain", TrainState(step=2), plain, opt_plain, "key")
dist.barrier()
saved = load_file(str(root / "fsdp" / "state.safetensors"))
assert saved["model.wte.weight"].shape == (64, 32) and "model.lm_head.weight" not in saved
assert saved["optim.0.exp_avg"].shape == (64, 32)  # whole moments, indexed as DDP's
assert saved.keys() == load_file(str(root / "plain" / "state.safetensors")).keys()

b, opt_b = build(sharded)
c, opt_c = build(sharded)
assert load_checkpoint(root / "fsdp", b, opt_b, "key", cfg.max_steps).step == 2
assert load_checkpoint(root / "plain", c, opt_c, "key", cfg.max_steps).step == 2
for s in range(2, 4):
    for model, optimizer in ((a, opt_a), (b, opt_b), (c, opt_c)):
        step(model, optimizer, s, sharded)
wa, wb, wc = whole_state(a), whole_state(b), whole_state(c)
for name in wa:
    assert torch.equal(wa[name], wb[name]), name
    torch.testing.assert_close(wa[name], wc[name], rtol=1e-4, atol=1e-5, msg=name)
print(f"rank {sharded.rank} ok")
dist.destroy_process_group()
"""


def test_an_fsdp_checkpoint_resumes_exactly_and_a_ddp_one_resumes_sharded(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(CHECKPOINT_WORKER)
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
    log = (tmp_path / "interrupted.log").open("w")
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    checkpoints = tmp_path / "checkpoints" / "pretrain"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        state = read_checkpoint_state(checkpoints)
        if state is not None and state["step"] >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    log.close()
    stopped = read_checkpoint_state(checkpoints)
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
    assert not checkpoints.exists()


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
        "total": 16 * shard + whole + activations,
    }
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
    # a model folder's, with the options; the table has a column per strategy
    model = runs[1] / "models/pretrain"
    result = runner.invoke(app, ["info", str(model), "--nproc", "2", "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    assert "Training memory per process: 2 process(es), batch_size 3" in result.stdout
    assert "ddp" in result.stdout and "fsdp" in result.stdout
    assert "Training memory" not in runner.invoke(app, ["info", str(model)]).stdout
    result = runner.invoke(app, ["info", "--params", str(params), "--batch-size", "0"])
    assert result.exit_code == 2 and "--batch-size" in result.stderr
