"""The fine-tunings in several processes (`nproc`, `strategy: ddp | fsdp`), as pretraining: 2
gloo processes fine-tune like 1 with the same global batch, only rank 0 writes (the same files
as one process), an interrupted sharded run resumes, and bad values exit 2 naming the key.

One process at batch_size B and grad_accum 2 is the reference for 2 processes at batch_size B
each: the same examples make each step, and its loss is the mean of the two micro-batches'
mean losses either way (so the instruct loss, masked to the responses, compares too).
"""

import csv
import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import said
from helpers.signals import sigterm_after_checkpoint
from helpers.tiny import prompt_base
from safetensors.torch import load_file
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.config import ModelConfig, PretrainConfig, to_dict
from gptpipe.errors import ConfigError
from gptpipe.model.gpt import GPTConfig
from gptpipe.stages import pretrain
from gptpipe.train.memory import training_memory

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch built without distributed"
)
runner = CliRunner()
SETTINGS = {
    "max_steps": 8,
    "epochs": 0.0,
    "batch_size": 4,
    "learning_rate": 3e-3,
    "min_lr": 3e-4,
    "warmup_steps": 2,
    "eval_interval": 4,
    "eval_batches": 2,
    "log_interval": 1,
    "checkpoint_interval": 0,
    "dtype": "float32",
    "threads": 1,
}
EXTRA = {"instruct": "--responses", "classify": "--scores"}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small random base model with a BPE trained on the prompt format (as the finetune
    stage tests' base), so that a 64-token context holds an Alpaca prompt and its response."""
    return prompt_base(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """{kind: its data file}: labelled texts of two classes, and instruction records whose
    responses differ in length (so the ranks' micro-batches hold different token counts)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(120):
        label, words = ("pos", ["good", "great", "fine"]) if i % 12 < 7 else ("neg", ["!!", "??"])
        lines.append(f"{label}\t{' '.join(rng.choice(words, size=rng.integers(1, 4)))}")
    (root / "classify.tsv").write_text("\n".join(lines) + "\n")
    words = ["cat", "dog", "sun", "tea", "map", "pen", "cup", "owl", "fig", "jam"]
    records = [{"instruction": "Reverse the word.", "input": w, "output": w[::-1]} for w in words]
    records += [
        {"instruction": f"Repeat the word {w} {n} times.", "input": "", "output": " ".join([w] * n)}
        for n, w in enumerate(words, 1)
    ]
    (root / "instruct.json").write_text(json.dumps(records))
    return {"classify": root / "classify.tsv", "instruct": root / "instruct.json"}


def argv(kind: str, base: Path, data: Path, root: Path, *overrides: str) -> list[str]:
    """`gptpipe finetune KIND` with its params in `root` and every output under root/o."""
    out = root / "o"
    paths = {"--out": out / "m", "--metrics": out / "m.json", "--plots": out / "p"}
    paths |= {EXTRA[kind]: out / "e.json", "--details": out / "run.json"}
    paths |= {"--checkpoints": out / "ckpt"}
    args = ["finetune", kind, "--params", str(root / "params.yaml"), "--base", str(base)]
    args += ["--data", str(data), *said.options(paths)]
    return args + [arg for item in overrides for arg in ("-S", item)]


def write_params(root: Path, kind: str, **settings: object) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump({kind: SETTINGS | settings}))


def alone(kind: str, base: Path, data: Path, root: Path, **settings: object) -> Path:
    """One process (in this one), grad_accum 2: the reference."""
    write_params(root, kind, grad_accum=2, **settings)
    result = runner.invoke(app, argv(kind, base, data, root))
    assert result.exit_code == 0, result.output
    return root / "o"


def two(kind: str, base: Path, data: Path, root: Path, strategy: str, **settings: object) -> Path:
    """Two gloo processes under `strategy`, the stage relaunching itself under torchrun."""
    write_params(root, kind, nproc=2, strategy=strategy, **settings)
    cmd = [sys.executable, "-m", "gptpipe", *argv(kind, base, data, root)]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = [line for line in said.lines(done.stderr) if "wrote " in line]
    assert len(summary) == 1 and summary[0].startswith(f"finetune {kind}: ")  # rank 0's
    return root / "o"


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def shape(value: object) -> object:
    """A JSON value's structure: its keys all the way down, the type of each leaf."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


def assert_same_training(one: Path, other: Path, processes: int) -> None:
    """The same curves, weights and figures within float rounding, in files of the same
    names and structure (nothing from rank 1, no checkpoint left)."""
    assert files(other) == files(one)
    for name in ("train.csv", "val.csv"):
        a, b = rows(one / "p" / name), rows(other / "p" / name)
        assert [r["step"] for r in a] == [r["step"] for r in b] and a
        assert list(a[0]) == list(b[0])
        for x, y in zip(a, b, strict=True):
            scores = [column for column in x if column.endswith(("loss", "accuracy"))]
            expected = {column: pytest.approx(float(x[column]), abs=1e-5) for column in scores}
            assert {column: float(y[column]) for column in scores} == expected, (name, x, y)
    wa, wb = (
        load_file(str(one / "m" / "model.safetensors")),
        load_file(str(other / "m" / "model.safetensors")),
    )
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5, msg=name)
    for name in ("m.json", "e.json", "run.json"):
        a, b = (json.loads((root / name).read_text()) for root in (one, other))
        assert shape(a) == shape(b), name
    ran = [json.loads((root / "run.json").read_text()) for root in (one, other)]
    assert (ran[0]["processes"], ran[1]["processes"]) == (1, processes)
    assert ran[0]["steps"] == ran[1]["steps"] and ran[0]["epochs"] == ran[1]["epochs"]


@pytest.fixture(scope="module")
def classify_alone(base, data, tmp_path_factory):
    root = tmp_path_factory.mktemp("classify-alone")
    return alone("classify", base, data["classify"], root, trainable="lora", lora_rank=4)


def test_two_fsdp_processes_fine_tune_lora_like_one_and_only_rank_0_writes(
    base, data, classify_alone, tmp_path
):
    # LoRA: every FSDP unit holds frozen weights beside trainable ones (a block's base
    # weights and adapters; the root's embeddings and the classifier head's)
    out = two("classify", base, data["classify"], tmp_path, "fsdp", trainable="lora", lora_rank=4)
    assert_same_training(classify_alone, out, processes=2)
    ran = json.loads((out / "run.json").read_text())["params"]["classify"]
    assert (ran["nproc"], ran["strategy"], ran["trainable"]) == (2, "fsdp", "lora")
    scores = [json.loads((root / "e.json").read_text()) for root in (classify_alone, out)]
    assert scores[0]["splits"]["test"]["accuracy"] == pytest.approx(
        scores[1]["splits"]["test"]["accuracy"]
    )


@pytest.mark.slow
def test_two_ddp_processes_fine_tune_a_classifier_like_one(base, data, classify_alone, tmp_path):
    out = two("classify", base, data["classify"], tmp_path, "ddp", trainable="lora", lora_rank=4)
    assert_same_training(classify_alone, out, processes=2)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_fine_tune_on_instructions_like_one(base, data, strategy, tmp_path):
    # last_blocks: the frozen embeddings and first block, the trainable last block and ln_f;
    # epochs: the steps follow from the global batch (3 epochs of 17 records at 2 x 4 x 1)
    settings = {"trainable": "last_blocks", "max_steps": 0, "epochs": 3.0}
    settings |= {"split": [0.85, 0.1, 0.05], "max_new_tokens": 4}
    one = alone("instruct", base, data["instruct"], tmp_path / "one", **settings)
    other = two("instruct", base, data["instruct"], tmp_path / "two", strategy, **settings)
    assert_same_training(one, other, processes=2)
    assert json.loads((one / "run.json").read_text())["steps"] == 7  # ceil(3 * 17 / 8)
    responses = [json.loads((root / "e.json").read_text()) for root in (one, other)]
    assert responses[0] == responses[1]  # the same greedy responses to every test record


@pytest.mark.slow
def test_an_interrupted_fsdp_fine_tuning_resumes_to_the_uninterrupted_weights(base, data, tmp_path):
    settings = {"trainable": "lora", "lora_rank": 4, "max_steps": 40, "eval_interval": 10}
    reference = two("classify", base, data["classify"], tmp_path / "ref", "fsdp", **settings)
    root = tmp_path / "stopped"
    write_params(root, "classify", nproc=2, strategy="fsdp", checkpoint_interval=1, **settings)
    # SIGTERM to the stage's own process (as `dvc exp` stops a job): it passes the signal on
    # to torchrun, which passes it on to each rank; they save a checkpoint together
    cmd = [sys.executable, "-m", "gptpipe", *argv("classify", base, data["classify"], root)]
    status, stopped = sigterm_after_checkpoint(
        cmd, root, root / "o" / "ckpt", tmp_path / "interrupted.log"
    )
    assert stopped is not None, (tmp_path / "interrupted.log").read_text()[-2000:]
    assert 3 <= stopped["step"] < settings["max_steps"]
    assert not (root / "o" / "m").exists()
    said_then = " ".join((tmp_path / "interrupted.log").read_text().split())
    assert f"stopped at step {stopped['step']}" in said_then  # rank 0, before the stage ended
    assert status == 130  # as one process stopped so
    (tmp_path / "interrupted.log").unlink()

    again = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from the checkpoint at step {stopped['step']}" in " ".join(
        again.stderr.split()
    )
    a = load_file(str(reference / "m" / "model.safetensors"))
    b = load_file(str(root / "o" / "m" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    assert rows(reference / "p" / "val.csv") == rows(root / "o" / "p" / "val.csv")
    assert not (root / "o" / "ckpt").exists()


@pytest.mark.parametrize(
    ("kind", "override", "named"),
    [
        ("classify", "classify.strategy=zero3", "classify.strategy"),
        ("instruct", "instruct.strategy=zero3", "instruct.strategy"),
        ("instruct", "instruct.nproc=0", "instruct.nproc"),
    ],
)
def test_a_bad_strategy_or_nproc_exits_2_naming_the_key(
    base, data, kind, override, named, tmp_path
):
    write_params(tmp_path, kind)
    result = runner.invoke(app, argv(kind, base, data[kind], tmp_path, override))
    assert result.exit_code == 2, result.output
    assert named in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- memory check


def test_pretraining_is_refused_only_when_its_share_per_process_does_not_fit():
    # GPT-2 XL's shape, 8 processes at batch 1, each on a 24 GiB GPU: a whole copy of the
    # training state per process (ddp, about 46 GiB) does not fit, fsdp's share (21 GiB) does
    model = ModelConfig(block_size=1024, n_layer=48, n_head=25, n_embd=1600)
    gpu, gib = torch.device("cuda"), 2**30
    for strategy in ("ddp", "fsdp"):
        cfg = PretrainConfig(batch_size=1, nproc=8, strategy=strategy)
        check = functools.partial(pretrain._check_training_fits, model, cfg, 50257, gpu, 8)
        if strategy == "fsdp":
            check(available=24 * gib)
            continue
        with pytest.raises(ConfigError) as refused:
            check(available=24 * gib)
        assert refused.value.key == "pretrain.batch_size"
        assert "in each of 8 processes (ddp)" in str(refused.value)
    # on the CPU the processes share the host's memory: the whole job's must fit there
    cpu = torch.device("cpu")
    cfg = PretrainConfig(batch_size=1, nproc=8, strategy="fsdp")
    with pytest.raises(ConfigError, match="in 8 processes \\(fsdp\\) together"):
        pretrain._check_training_fits(model, cfg, 50257, cpu, 8, available=24 * gib)
    # and there each process's plain copy of the model (kept while its shards train) counts
    small = ModelConfig(block_size=64, n_layer=2, n_head=2, n_embd=64)
    cfg = PretrainConfig(batch_size=2, nproc=2, strategy="fsdp")
    share = training_memory(GPTConfig(vocab_size=50257, **to_dict(small)), 2, 2, "fsdp")
    fits = 2 * (share.total + share.host)
    pretrain._check_training_fits(small, cfg, 50257, cpu, 2, available=fits)
    with pytest.raises(ConfigError) as refused:
        pretrain._check_training_fits(small, cfg, 50257, cpu, 2, available=fits - share.host)
    assert refused.value.key == "pretrain.batch_size"
