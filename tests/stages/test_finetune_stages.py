"""The finetune stages: instruction and classification fine-tuning from a base model folder."""

import csv
import json
import math

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.config import ClassifyConfig, InstructConfig
from gptpipe.errors import BadInput
from gptpipe.model.folder import load_model, read_info, save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.prompts import format_prompt
from gptpipe.stages import finetune_classify, finetune_instruct
from gptpipe.tokenizer.bpe import train_bpe
from gptpipe.tokenizer.folder import PATTERNS, load_tokenizer, save_tokenizer

runner = CliRunner()
FAST = {
    "warmup_steps": 3,
    "eval_batches": 2,
    "log_interval": 5,
    "checkpoint_interval": 0,
    "threads": 1,
}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small random base model with a real BPE trained on the prompt format, so that the
    Alpaca prompts take ~45 tokens and a 64-token context holds prompt and response."""
    root = tmp_path_factory.mktemp("base")
    documents = [format_prompt("Reverse the word.", "cat") * 3, "good great fine !! ??"]
    ranks = train_bpe(documents, 340, PATTERNS["gpt2"], show_progress=False).ranks
    save_tokenizer(root / "tok", ranks, "bpe", "gpt2")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=340, block_size=64, n_layer=2, n_head=2, n_embd=32))
    save_model(root / "base", model, root / "tok", meta={"stage": "pretrain"})
    return root / "base"


@pytest.fixture(scope="module")
def instruct_data(tmp_path_factory):
    words = ["cat", "dog", "sun", "tea", "map", "pen", "cup", "owl", "fig", "jam"]
    records = (
        [
            {"instruction": f"Repeat the word {w} twice.", "input": "", "output": f"{w} {w}"}
            for w in words
        ]
        + [{"instruction": "Reverse the word.", "input": w, "output": w[::-1]} for w in words]
        + [
            {"instruction": "Say the word in capitals.", "input": w, "output": w.upper()}
            for w in words
        ]
    )
    path = tmp_path_factory.mktemp("data") / "instruct.json"
    path.write_text(json.dumps(records))
    return path


@pytest.fixture(scope="module")
def classify_data(tmp_path_factory):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(120):
        label, words = ("pos", ["good", "great", "fine"]) if i % 12 < 7 else ("neg", ["!!", "??"])
        lines.append(f"{label}\t{' '.join(rng.choice(words, size=rng.integers(1, 4)))}")
    path = tmp_path_factory.mktemp("data") / "classify.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_instruct_run_trains_on_responses_and_writes_examples(base, instruct_data, tmp_path):
    cfg = InstructConfig(
        max_steps=30,
        batch_size=6,
        learning_rate=3e-3,
        min_lr=3e-4,
        eval_interval=10,
        val_fraction=0.2,
        num_examples=2,
        max_new_tokens=8,
        **FAST,
    )
    out = tmp_path / "instruct"
    metrics = finetune_instruct.run(
        cfg,
        base,
        instruct_data,
        out,
        tmp_path / "m.json",
        tmp_path / "plots",
        tmp_path / "examples.json",
    )
    assert json.loads((tmp_path / "m.json").read_text()) == pytest.approx(metrics)
    assert metrics["train_records"] == 24 and metrics["val_records"] == 6
    assert metrics["truncated_records"] == 0 and metrics["steps"] == 30
    val = rows(tmp_path / "plots" / "val.csv")
    assert [int(r["step"]) for r in val] == [10, 20, 30]
    losses = [float(r["val_loss"]) for r in val]
    assert losses == sorted(losses, reverse=True) and losses[-1] < math.log(340) - 1
    assert metrics["val_perplexity"] == pytest.approx(math.exp(metrics["val_loss"]))
    examples = json.loads((tmp_path / "examples.json").read_text())
    records = json.loads(instruct_data.read_text())
    assert len(examples) == 2
    for example in examples:
        assert set(example) == {"instruction", "input", "reference", "response"}
        assert {k: example[k] for k in ("instruction", "input")} | {
            "output": example["reference"]
        } in records
        assert isinstance(example["response"], str) and "<|endoftext|>" not in example["response"]
    model, info = load_model(out)
    assert info.meta["stage"] == "instruct" and info.config == read_info(base).config
    assert not torch.equal(model.wte.weight, load_model(base)[0].wte.weight)


def test_instruct_cli_and_bad_input(base, instruct_data, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump({"instruct": {"max_steps": 2, "batch_size": 4, "eval_interval": 2, **FAST}})
    )
    common = [
        "finetune",
        "instruct",
        "--params",
        str(params),
        "--base",
        str(base),
        "--out",
        str(tmp_path / "m"),
        "--metrics",
        str(tmp_path / "m.json"),
        "--plots",
        str(tmp_path / "p"),
        "--examples",
        str(tmp_path / "e.json"),
        "--checkpoints",
        str(tmp_path / "ckpt"),
    ]
    # A context shorter than the prompts: every record is cut but keeps response to learn.
    args = [*common, "--data", str(instruct_data), "-S", "instruct.max_length=20"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # summaries and progress go to stderr; stdout is for results
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["truncated_records"] == 30 and metrics["max_length"] == 20
    assert math.isfinite(metrics["val_loss"])
    assert len(json.loads((tmp_path / "e.json").read_text())) == 3  # the default num_examples
    assert not (tmp_path / "ckpt").exists()

    result = runner.invoke(app, [*common, "--data", str(tmp_path / "nope.json")])
    assert result.exit_code == 2 and "nope.json" in result.stderr
    result = runner.invoke(
        app, [*common, "--data", str(instruct_data), "-S", "instruct.max_length=300"]
    )
    assert result.exit_code == 2 and "instruct.max_length" in result.stderr
    assert "block_size 64" in result.stderr
    result = runner.invoke(
        app, [*common, "--data", str(instruct_data), "--base", str(tmp_path / "nobase")]
    )
    assert result.exit_code == 2 and "nobase" in result.stderr


def test_classify_run_learns_and_reports_accuracy_against_the_baseline(
    base, classify_data, tmp_path
):
    cfg = ClassifyConfig(
        max_steps=40,
        batch_size=16,
        learning_rate=3e-3,
        min_lr=3e-4,
        eval_interval=20,
        val_fraction=0.1,
        test_fraction=0.2,
        **FAST,
    )
    out = tmp_path / "classify"
    metrics = finetune_classify.run(
        cfg, base, classify_data, out, tmp_path / "m.json", tmp_path / "plots"
    )
    assert json.loads((tmp_path / "m.json").read_text()) == metrics
    assert metrics["labels"] == ["neg", "pos"]
    # 70 pos / 50 neg, stratified: test 14 pos + 10 neg, val 7 + 5.
    assert (metrics["train_records"], metrics["val_records"], metrics["test_records"]) == (
        84,
        12,
        24,
    )
    assert metrics["majority_baseline_test"] == pytest.approx(14 / 24)
    assert metrics["majority_baseline_val"] == pytest.approx(7 / 12)
    assert metrics["test_accuracy"] >= 0.9 and metrics["train_accuracy"] >= 0.9
    assert metrics["test_accuracy"] > metrics["majority_baseline_test"]
    val = rows(tmp_path / "plots" / "val.csv")
    assert list(val[0]) == ["step", "val_loss", "val_accuracy"]
    model, info = load_model(out)
    assert info.labels == ["neg", "pos"] and info.config.n_classes == 2
    assert info.meta["stage"] == "classify"
    enc = load_tokenizer(out)
    pos, neg = enc.encode("great good"), enc.encode("!! ??")
    x = torch.tensor(
        [
            pos + [0] * (len(neg) - len(pos)) if len(pos) < len(neg) else pos,
            neg + [0] * max(0, len(pos) - len(neg)),
        ]
    )
    lengths = torch.tensor([len(pos), len(neg)])
    assert model.classify(x, lengths).argmax(-1).tolist() == [1, 0]


def test_classify_cli_and_bad_input(base, classify_data, instruct_data, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump({"classify": {"max_steps": 2, "batch_size": 8, "eval_interval": 2, **FAST}})
    )
    common = [
        "finetune",
        "classify",
        "--params",
        str(params),
        "--out",
        str(tmp_path / "m"),
        "--metrics",
        str(tmp_path / "m.json"),
        "--plots",
        str(tmp_path / "p"),
        "--checkpoints",
        str(tmp_path / "ckpt"),
    ]
    result = runner.invoke(app, [*common, "--base", str(base), "--data", str(classify_data)])
    assert result.exit_code == 0, result.output
    assert read_info(tmp_path / "m").labels == ["neg", "pos"]

    bad = tmp_path / "bad.tsv"
    bad.write_text("pos\tfine\nneg no tab\n")
    result = runner.invoke(app, [*common, "--base", str(base), "--data", str(bad)])
    assert result.exit_code == 2 and "bad.tsv: line 2" in result.stderr
    tiny = tmp_path / "tiny.tsv"
    tiny.write_text("pos\ta\nneg\tb\npos\tc\n")
    result = runner.invoke(app, [*common, "--base", str(base), "--data", str(tiny)])
    assert result.exit_code == 2 and "split empty" in result.stderr
    # A classifier is not a base language model.
    result = runner.invoke(
        app,
        [
            "finetune",
            "instruct",
            "--params",
            str(params),
            "--base",
            str(tmp_path / "m"),
            "--data",
            str(instruct_data),
        ],
    )
    assert result.exit_code == 2 and "classifier" in result.stderr


def test_finetuning_is_deterministic(base, classify_data, tmp_path):
    cfg = ClassifyConfig(max_steps=3, batch_size=8, eval_interval=3, **FAST)
    for name in ("a", "b"):
        finetune_classify.run(
            cfg,
            base,
            classify_data,
            tmp_path / name,
            tmp_path / f"{name}.json",
            tmp_path / f"p{name}",
        )
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()
    with pytest.raises(BadInput, match=r"classify\.max_length"):
        finetune_classify.run(
            ClassifyConfig(max_length=999),
            base,
            classify_data,
            tmp_path / "c",
            tmp_path / "c.json",
            tmp_path / "pc",
        )
