"""The finetune stages: instruction and classification fine-tuning from a base model folder."""

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import said
from helpers.ollama import Ollama
from helpers.tiny import prompt_base
from safetensors.torch import load_file
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.config import ClassifyConfig, InstructConfig
from gptpipe.errors import BadInput
from gptpipe.model.folder import load_model, read_info
from gptpipe.prompts import format_prompt
from gptpipe.stages import finetune_classify, finetune_instruct
from gptpipe.tokenizer.folder import load_tokenizer
from gptpipe.train.recipe import TrainingPaths

runner = CliRunner()
FAST = {
    "epochs": 0.0,
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
    return prompt_base(tmp_path_factory.mktemp("base"))


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


def test_instruct_responses_are_each_prompts_uncached_greedy_decode(base, instruct_data):
    """The stage decodes the test prompts batched on the KV cache: the same text as a full
    forward over the last block_size tokens per step, one prompt at a time."""
    from gptpipe.finetune.instruct import read_instructions
    from gptpipe.finetune.responses import Scoring, respond
    from gptpipe.model.folder import load_language_model

    model, enc = load_language_model(base, torch.device("cpu"))
    records = read_instructions(instruct_data)[::4]  # prompts of different lengths

    def alone(prompt: list[int], stop: int | None) -> list[int]:
        ids = list(prompt)
        with torch.no_grad():
            for _ in range(30):  # ~45-token prompts: the 64-token window fills and slides
                logits, _ = model(torch.tensor([ids[-64:]]))
                token = int(logits[0, -1].argmax())
                if token == stop:
                    break
                ids.append(token)
        return ids[len(prompt) :]

    prompts = [enc.encode_ordinary(format_prompt(r.instruction, r.input)) for r in records]
    stop = alone(prompts[0], None)[5]  # a token the model does produce: rows stop early
    expected = [enc.decode(alone(p, stop)).strip() for p in prompts]
    model.eval()
    with torch.no_grad():
        got = respond(model, enc, records, Scoring("float32", 30, 3, stop))
    assert got == expected
    assert len({len(p) for p in prompts}) > 1


def test_instruct_run_trains_on_responses_and_writes_responses(base, instruct_data, tmp_path):
    cfg = InstructConfig(
        max_steps=30,
        batch_size=6,
        learning_rate=3e-3,
        min_lr=3e-4,
        eval_interval=10,
        split=[0.6, 0.2, 0.2],
        shuffle=True,
        max_new_tokens=8,
        **FAST,
    )
    out = tmp_path / "instruct"
    paths = TrainingPaths(out, tmp_path / "m.json", tmp_path / "plots")
    paths.extra = tmp_path / "responses.json"
    metrics = finetune_instruct.run(cfg, base, instruct_data, paths)
    # the DVC metric: the test responses' mean ROUGE-L, under the model it describes
    assert json.loads((tmp_path / "m.json").read_text()) == {
        "instruct": {"rougeL": pytest.approx(metrics["test_rougeL"])}
    }
    assert (metrics["train_records"], metrics["test_records"], metrics["val_records"]) == (18, 6, 6)
    assert metrics["truncated_records"] == 0 and metrics["steps"] == 30
    val = rows(tmp_path / "plots" / "val.csv")
    assert [int(r["step"]) for r in val] == [10, 20, 30]
    losses = [float(r["val_loss"]) for r in val]
    assert losses == sorted(losses, reverse=True) and losses[-1] < math.log(340) - 1
    assert metrics["val_perplexity"] == pytest.approx(math.exp(metrics["val_loss"]))
    responses = json.loads((tmp_path / "responses.json").read_text())
    records = json.loads(instruct_data.read_text())
    shown = [
        {"instruction": r["instruction"], "input": r["input"], "output": r["reference"]}
        for r in responses
    ]
    assert len(shown) == 6 and all(r in records for r in shown)  # the shuffled test split
    for r in responses:
        assert set(r) == {
            "instruction",
            "input",
            "reference",
            "response",
            "base_response",
            "rougeL",
            "exact",
            "base_rougeL",
            "base_exact",
        }
        assert isinstance(r["response"], str) and "<|endoftext|>" not in r["response"]
        assert 0 <= r["rougeL"] <= 1 and r["exact"] == (r["response"] == r["reference"])
    assert metrics["test_rougeL"] == pytest.approx(sum(r["rougeL"] for r in responses) / 6)
    assert metrics["base_test_loss"] > metrics["test_loss"]
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
        "--responses",
        str(tmp_path / "e.json"),
        "--checkpoints",
        str(tmp_path / "ckpt"),
        "--details",
        str(tmp_path / "run.json"),
    ]
    # A context shorter than the prompts: every record is cut but keeps response to learn.
    args = [*common, "--data", str(instruct_data), "-S", "instruct.max_length=20"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # summaries and progress go to stderr; stdout is for results
    metrics = json.loads((tmp_path / "m.json").read_text())
    details = json.loads((tmp_path / "run.json").read_text())
    assert details["truncated_records"] == 30 and details["max_length"] == 20
    assert math.isfinite(details["val_loss"]) and set(metrics) == {"instruct"}
    assert details["params"]["instruct"]["max_length"] == 20  # as it ran: -S included
    assert len(json.loads((tmp_path / "e.json").read_text())) == 3  # 10% of 30: the test split
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


def finetune_cli(kind: str, base: Path, data: Path, root: Path, **sizes: int):
    """`gptpipe finetune KIND` in `root`, every output path given: (result, those paths)."""
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({kind: {"max_steps": 2, "eval_interval": 2, **sizes, **FAST}}))
    extra = {"instruct": "--responses", "classify": "--scores"}[kind]
    paths = {"--out": root / "m", "--metrics": root / "m.json", "--plots": root / "p"}
    paths |= {extra: root / "e.json", "--details": root / "run.json"}
    args = ["finetune", kind, "--params", str(params), "--base", str(base)]
    args += ["--data", str(data), "--checkpoints", str(root / "ckpt")]
    result = runner.invoke(app, [*args, *said.options(paths)])
    assert result.exit_code == 0, result.output
    return result, list(paths.values())


@pytest.fixture(scope="module")
def instruct_cli(base, instruct_data, tmp_path_factory):
    """`gptpipe finetune instruct` run once, every output path given: (result, those paths)."""
    root = tmp_path_factory.mktemp("instruct_cli")
    return finetune_cli("instruct", base, instruct_data, root, batch_size=4)


def test_instruct_scoring_of_the_base_and_tuned_model_shows_progress(instruct_cli):
    """Scoring (losses over whole splits, greedy responses to the test split) takes minutes at
    full size: each step has its bar, on stderr, finished at the test split's size."""
    result, _ = instruct_cli
    for label, splits in (("score base", ["test"]), ("score tuned", ["val", "test"])):
        for split in splits:
            assert re.search(rf"^{label}: {split} loss\b.* 1/1\b", result.stderr, re.M), label
        # 10% of 30 records: 3 test responses
        assert re.search(rf"^{label}: test responses\b.* 3/3\b", result.stderr, re.M), label


def test_instruct_cli_ends_with_one_line_saying_what_it_wrote(instruct_cli):
    result, paths = instruct_cli
    assert said.wrote(result.stderr, "finetune instruct") == ("", said.paths(*paths))


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
    details = tmp_path / "details.json"
    paths = TrainingPaths(out, tmp_path / "m.json", tmp_path / "plots", extra=details)
    metrics = finetune_classify.run(cfg, base, classify_data, paths)
    assert json.loads((tmp_path / "m.json").read_text()) == {
        "classify": {"test_accuracy": metrics["test_accuracy"]}
    }
    assert json.loads(details.read_text())["labels"] == ["neg", "pos"]
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
    assert metrics["wall_seconds"] > metrics["seconds"]  # the stage's, with the training loop
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
        "--details",
        str(tmp_path / "run.json"),
        "--scores",
        str(tmp_path / "d.json"),
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


def test_classify_cli_ends_with_one_line_saying_what_it_wrote(base, classify_data, tmp_path):
    result, paths = finetune_cli("classify", base, classify_data, tmp_path, batch_size=8)
    assert said.wrote(result.stderr, "finetune classify") == ("", said.paths(*paths))


def test_finetuning_is_deterministic(base, classify_data, tmp_path):
    cfg = ClassifyConfig(max_steps=3, batch_size=8, eval_interval=3, **FAST)
    for name in ("a", "b"):
        paths = TrainingPaths(tmp_path / name, tmp_path / f"{name}.json", tmp_path / f"p{name}")
        finetune_classify.run(cfg, base, classify_data, paths)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()
    with pytest.raises(BadInput, match=r"classify\.max_length"):
        paths = TrainingPaths(tmp_path / "c", tmp_path / "c.json", tmp_path / "pc")
        finetune_classify.run(ClassifyConfig(max_length=999), base, classify_data, paths)


# --------------------------------------------------------------------------- the protocols

SPAM_WORDS = ["FREE", "WIN", "prize", "cash", "CLAIM", "txt", "call", "08001234567", "£1000"]
HAM_WORDS = ["lunch", "home", "tonight", "mum", "love", "see you", "ok", "meeting", "later"]
# Hand-written held-out messages with known answers (none of them is in the training file).
HELD_OUT = {
    "URGENT! You WIN a £1000 cash prize, txt CLAIM now": "spam",
    "FREE entry: call 08001234567 to claim your prize": "spam",
    "ok see you at home tonight, love mum": "ham",
    "running late for lunch, meeting you later": "ham",
}


@pytest.fixture(scope="module")
def spam_data(tmp_path_factory):
    """60 ham and 30 spam messages from two vocabularies (imbalanced, as SMS spam is)."""
    rng = np.random.default_rng(1)
    lines = []
    for i in range(90):
        label, words = ("spam", SPAM_WORDS) if i % 3 == 0 else ("ham", HAM_WORDS)
        lines.append(f"{label}\t{' '.join(rng.choice(words, size=rng.integers(3, 7)))}")
    path = tmp_path_factory.mktemp("spam") / "classify.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def spam_cfg(**kw):
    settings = FAST | dict(
        protocol="balanced",
        epochs=12,
        batch_size=8,
        learning_rate=3e-3,
        min_lr=3e-4,
        eval_interval=20,
    )
    return ClassifyConfig(**(settings | kw))


@pytest.fixture(scope="module")
def spam_model(base, spam_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("spam-model")
    paths = TrainingPaths(root / "model", root / "metrics.json", root / "plots")
    paths.extra = root / "details.json"
    metrics = finetune_classify.run(spam_cfg(), base, spam_data, paths)
    return root, metrics


def test_balanced_protocol_metrics_details_and_confusion_plot(spam_model):
    root, metrics = spam_model
    # 30 spam + 30 of the 60 ham, shuffled, cut 70/10/20.
    assert [metrics[f"{n}_records"] for n in ("train", "val", "test")] == [42, 6, 12]
    assert metrics["steps"] == math.ceil(12 * 42 / 8)
    assert metrics["test_accuracy"] == 1.0 and metrics["test_macro_f1"] == 1.0
    assert metrics["trainable_params"] == metrics["total_params"] > 0
    for name in ("train", "val", "test"):
        assert 0 <= metrics[f"untuned_{name}_accuracy"] <= 1
    details = json.loads((root / "details.json").read_text())
    assert details["labels"] == ["ham", "spam"] and details["protocol"] == "balanced"
    test = details["splits"]["test"]
    assert sum(map(sum, test["confusion"])) == 12 and test["accuracy"] == 1.0
    assert set(test["per_class"]) == {"ham", "spam"}
    assert set(test["per_class"]["spam"]) == {"precision", "recall", "f1", "support"}
    assert test["majority_baseline"] == metrics["majority_baseline_test"]
    rows = json.loads((root / "plots" / "confusion.json").read_text())
    assert len(rows) == 12 and all(set(r) == {"actual", "predicted"} for r in rows)
    assert sum(r["actual"] == "spam" for r in rows) == test["per_class"]["spam"]["support"]
    # The DVC metric is one number (a dvc exp show column), named apart from other files'.
    headline = json.loads((root / "metrics.json").read_text())
    assert headline == {"classify": {"test_accuracy": metrics["test_accuracy"]}}


def test_classify_command_labels_held_out_messages(spam_model, monkeypatch):
    root, _ = spam_model
    model = str(root / "model")
    texts = list(HELD_OUT)
    result = runner.invoke(app, ["classify", "--model", model, *texts])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == list(HELD_OUT.values())
    assert all(0.5 < float(line.split("\t")[1]) <= 1 for line in lines)

    result = runner.invoke(app, ["classify", "--model", model, "--json", texts[0]])
    record = json.loads(result.stdout)
    assert record["text"] == texts[0] and record["label"] == "spam"
    assert record["probability"] == pytest.approx(record["probabilities"]["spam"])
    assert sum(record["probabilities"].values()) == pytest.approx(1.0)

    result = runner.invoke(app, ["classify", "--model", model, "--json"], input="\n".join(texts))
    assert [json.loads(x)["label"] for x in result.stdout.splitlines()] == list(HELD_OUT.values())

    result = runner.invoke(app, ["classify", "--model", str(root / "nope"), "hi"])
    assert result.exit_code == 2 and "nope: model folder not found" in result.stderr


def test_last_blocks_and_lora_train_only_their_weights(base, spam_data, tmp_path):
    base_weights = load_file(str(base / "model.safetensors"))
    for trainable in ("last_blocks", "lora"):
        out = tmp_path / trainable
        cfg = spam_cfg(trainable=trainable, epochs=2, lora_rank=4, lora_targets=["c_attn", "c_fc"])
        paths = TrainingPaths(out, tmp_path / f"{trainable}.json", tmp_path / f"p-{trainable}")
        paths.extra = tmp_path / f"d-{trainable}.json"
        metrics = finetune_classify.run(cfg, base, spam_data, paths)
        weights = load_file(str(out / "model.safetensors"))
        assert set(weights) == set(base_weights) - {"lm_head.weight"} | {
            "score.weight",
            "score.bias",
        }
        changed = {
            k for k in base_weights if k in weights and not torch.equal(weights[k], base_weights[k])
        }
        if trainable == "last_blocks":  # the head, block 1 (of 2) and ln_f
            assert changed == {k for k in base_weights if k.startswith(("h.1.", "ln_f."))}
            block = sum(v.numel() for k, v in base_weights.items() if k.startswith("h.1."))
            assert metrics["trainable_params"] == block + 2 * 32 + 2 * 32 + 2
        else:  # merged adapters: c_attn and c_fc weights of both blocks, plus the head
            assert changed == {
                f"h.{i}.{m}.weight" for i in (0, 1) for m in ("attn.c_attn", "mlp.c_fc")
            }
            assert metrics["trainable_params"] == 2 * (3 * 4 * (32 + 32) + 4 * (32 + 128)) + 66
        assert metrics["total_params"] == sum(v.numel() for v in weights.values())
        assert read_info(out).meta["trainable"] == trainable


def test_classify_bad_input_exits_2_naming_the_key_or_file(base, spam_data, tmp_path):
    common = ["finetune", "classify", "--base", str(base), "--out", str(tmp_path / "m")]
    common += ["--metrics", str(tmp_path / "m.json"), "--plots", str(tmp_path / "p")]
    common += ["--scores", str(tmp_path / "d.json"), "--checkpoints", str(tmp_path / "c")]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"classify": {"max_steps": 2, **FAST}}))
    common += ["--params", str(params)]
    one_class = tmp_path / "one.tsv"
    one_class.write_text("ham\thi\nham\tbye\nham\tok\n")
    cases = {
        (str(one_class),): "one.tsv: classification data needs at least 2 labels",
        (
            str(spam_data),
            "-S",
            "classify.trainable=last_blocks",
            "-S",
            "classify.trainable_blocks=3",
        ): "classify.trainable_blocks': 3 exceeds the base model's 2",
        (str(spam_data), "-S", "classify.lora_targets=[wte]"): "classify.lora_targets",
        (str(spam_data), "-S", "classify.protocol=book"): "classify.protocol",
    }
    few_spam = tmp_path / "few.tsv"
    few_spam.write_text("".join(f"ham\tword {i}\n" for i in range(30)) + "spam\tWIN\nspam\tFREE\n")
    cases[(str(few_spam),)] = "few.tsv: class 'spam' (2 records) is absent from the test split"
    for args, message in cases.items():
        result = runner.invoke(app, [*common, "--data", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.json").exists()


def yes_no_records(words):
    return [
        {"instruction": f"Answer {answer}.", "input": w, "output": answer}
        for w in words
        for answer in ("yes", "no")
    ]


def test_instruct_learns_an_exact_answer_for_held_out_inputs_and_the_judge_scores_it(
    base, tmp_path
):
    """Train on "Answer yes./no." with 20 inputs; the test split (4 inputs never trained on)
    must be answered exactly. The judge is a scripted Ollama on 127.0.0.1."""
    train_words = "dog pen cup owl fig jam hat box car bus red sky sea ink oak egg ice joy key leg"
    train_words = train_words.split()
    held_out = ["cat", "sun", "tea", "map"]
    records = yes_no_records(train_words) + yes_no_records(held_out) + yes_no_records(["x", "y"])
    data = tmp_path / "instruct.json"
    data.write_text(json.dumps(records))
    server = Ollama(["90"] * 8)
    cfg = InstructConfig(
        max_steps=100,
        batch_size=8,
        learning_rate=1e-2,
        min_lr=1e-3,
        eval_interval=50,
        split=[40 / 52, 8 / 52, 4 / 52],
        max_new_tokens=4,
        judge_url=server.url + "/api/chat",
        judge_model="llama3",
        **FAST,
    )
    try:
        paths = TrainingPaths(tmp_path / "m", tmp_path / "m.json", tmp_path / "p")
        paths.extra = tmp_path / "r.json"
        metrics = finetune_instruct.run(cfg, base, data, paths)
    finally:
        server.close()
    responses = json.loads((tmp_path / "r.json").read_text())
    assert [r["input"] for r in responses] == [w for w in held_out for _ in (0, 1)]
    assert [r["response"] for r in responses] == [r["reference"] for r in responses]
    assert metrics["test_exact"] == 1.0 and metrics["test_rougeL"] == 1.0
    assert metrics["base_test_exact"] == 0.0 and metrics["base_test_rougeL"] < 0.5
    assert metrics["judge_mean"] == 90.0 and metrics["judge_unparsed"] == 0
    assert all(r["judge_score"] == 90 for r in responses) and len(server.requests) == 8


def test_instruct_lora_and_bad_input(base, instruct_data, tmp_path):
    cfg = InstructConfig(
        max_steps=4, batch_size=4, eval_interval=4, trainable="lora", lora_rank=2, **FAST
    )
    paths = TrainingPaths(tmp_path / "m", tmp_path / "m.json", tmp_path / "p")
    metrics = finetune_instruct.run(cfg, base, instruct_data, paths)
    assert metrics["trainable_params"] == 2 * (
        3 * 2 * 64 + 2 * (32 + 32) + 2 * (32 + 128) + 2 * (128 + 32)
    )
    assert set(load_file(str(tmp_path / "m" / "model.safetensors"))) == set(
        load_file(str(base / "model.safetensors"))
    )
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"instruct": {"max_steps": 2, **FAST}}))
    common = ["finetune", "instruct", "--params", str(params), "--base", str(base)]
    common += ["--out", str(tmp_path / "o"), "--metrics", str(tmp_path / "o.json")]
    common += ["--plots", str(tmp_path / "op"), "--responses", str(tmp_path / "or.json")]
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    unusable = tmp_path / "unusable.json"
    unusable.write_text(json.dumps([{"instruction": "", "input": "", "output": "x"}] * 3))
    cases = {
        (str(empty),): "empty.json: expected a non-empty JSON list of instruction records",
        (str(unusable),): "unusable.json: record 0: empty instruction or output",
        (
            str(instruct_data),
            "-S",
            "instruct.trainable=lora",
            "-S",
            "instruct.lora_targets=[head]",
        ): "instruct.lora_targets",
        (str(instruct_data), "-S", "instruct.split=[0.5, 0.5]"): "instruct.split",
    }
    for extra, message in cases.items():
        result = runner.invoke(app, [*common, "--data", *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.stderr
    assert not (tmp_path / "o").exists()
