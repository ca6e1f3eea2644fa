"""The report stage: report.md with the metric values, working image links, and examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.model.folder import save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.model.heads import with_classifier
from gptpipe.model.params import config_breakdown
from gptpipe.report.text import NOT_RUN
from gptpipe.tokenizer.folder import save_gpt2

runner = CliRunner()
CONFIG = GPTConfig(vocab_size=50257, block_size=32, n_layer=2, n_head=2, n_embd=32)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture()
def run_tree(tmp_path: Path) -> Path:
    """What a full pipeline run leaves behind, with recognisable values."""
    reports = tmp_path / "reports"
    metrics = {
        "pretrain": {
            "train_loss": 3.14159,
            "val_loss": 3.5,
            "val_perplexity": 33.115,
            "steps": 600,
        },
        "instruct": {"train_loss": 1.23456, "val_loss": 1.75, "steps": 200},
        "classify": {
            "train_accuracy": 0.9876,
            "val_accuracy": 0.8765,
            "test_accuracy": 0.8642,
            "majority_baseline_train": 0.5,
            "majority_baseline_val": 0.55,
            "majority_baseline_test": 0.5432,
            "labels": ["ham", "spam"],
        },
        "evaluate": {
            "base": {"perplexity": 41.0371, "bits_per_byte": 1.3579, "tokens": 900, "stride": 64},
            "instruct": {"perplexity": 47.2468, "bits_per_byte": 1.4321, "tokens": 900},
        },
    }
    for name, data in metrics.items():
        write(reports / "metrics" / f"{name}.json", json.dumps(data))
    for stage in ("pretrain", "instruct", "classify"):
        write(
            reports / "plots" / stage / "train.csv",
            "step,train_loss,lr,tokens_per_s\n1,4.0,0.001,100\n2,3.5,0.001,100\n3,3.2,0.001,90\n",
        )
        val = (
            "step,val_loss,val_accuracy\n3,3.4,0.8\n"
            if stage == "classify"
            else ("step,val_loss\n1,4.1\n3,3.5\n")
        )
        write(reports / "plots" / stage / "val.csv", val)
    samples = [
        {"model": "base", "prompt": "The ", "format": "raw", "method": "greedy", "sample": 0,
         "temperature": 0.0, "top_k": 0, "text": "quick brown fox"},
        {"model": "instruct", "prompt": "The ", "format": "alpaca", "method": "sample",
         "sample": 1, "temperature": 0.8, "top_k": 40, "text": "lazy ```dog```"},
    ]  # fmt: skip
    write(reports / "samples" / "samples.json", json.dumps(samples))
    examples = [
        {"instruction": "Name the capital of France.", "input": "", "reference": "Paris.",
         "response": "Paris is the capital."},
        {"instruction": "Add the numbers.", "input": "2 and 3", "reference": "5",
         "response": "6"},
    ]  # fmt: skip
    write(reports / "instruct_examples.json", json.dumps(examples))
    save_gpt2(tmp_path / "tok")
    torch.manual_seed(0)
    lm = GPT(CONFIG)
    save_model(tmp_path / "models" / "base", lm, tmp_path / "tok")
    save_model(tmp_path / "models" / "instruct", lm, tmp_path / "tok", meta={"stage": "instruct"})
    classifier = with_classifier(lm, 2)
    save_model(
        tmp_path / "models" / "classify", classifier, tmp_path / "tok", labels=["ham", "spam"]
    )
    return tmp_path


def report_args(root: Path) -> list[str]:
    reports = root / "reports"
    args = ["report", "--metrics", str(reports / "metrics"), "--plots", str(reports / "plots")]
    args += ["--samples", str(reports / "samples")]
    args += ["--examples", str(reports / "instruct_examples.json")]
    for name in ("base", "instruct", "classify"):
        args += ["--model", str(root / "models" / name)]
    args += ["--out", str(reports / "report.md"), "--figures", str(reports / "figures")]
    params = root / "params.yaml"
    params.write_text("report:\n  title: Test run 42\n")
    return [*args, "--params", str(params)]


def test_report_holds_metrics_links_params_examples_and_samples(run_tree: Path) -> None:
    result = runner.invoke(app, report_args(run_tree))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # summaries and progress go to stderr; stdout is for results
    report_path = run_tree / "reports" / "report.md"
    text = report_path.read_text()
    assert text.startswith("# Test run 42\n")
    for value in ("3.142", "3.5", "33.12", "1.235", "1.75", "41.04", "1.358", "47.25", "1.432"):
        assert f"| {value} |" in text, value
    assert "| classify | test accuracy | 0.8642 | majority baseline 0.5432 |" in text
    assert "| classify | val accuracy | 0.8765 | majority baseline 0.55 |" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == [
        "figures/classify_accuracy.png",
        "figures/classify_loss.png",
        "figures/instruct_loss.png",
        "figures/pretrain_loss.png",
    ]
    for link in links:
        assert (report_path.parent / link).read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (run_tree / "reports" / "figures").iterdir()) == sorted(
        Path(link).name for link in links
    )
    lm_total = config_breakdown(CONFIG)["total"]
    assert text.count(f"| {lm_total:,} |") == 2  # base and instruct
    assert f"| {lm_total + 32 * 2 + 2:,} |" in text  # the classifier's head adds 66
    assert "ham, spam" in text
    for snippet in ("Name the capital of France.", "Paris is the capital.", "2 and 3"):
        assert snippet in text
    assert "quick brown fox" in text and "````text\nlazy ```dog```\n````" in text
    assert NOT_RUN not in text


def test_report_says_not_run_for_missing_inputs(tmp_path: Path) -> None:
    result = runner.invoke(app, report_args(tmp_path))
    assert result.exit_code == 0, result.output
    text = (tmp_path / "reports" / "report.md").read_text()
    assert text.count(NOT_RUN) >= 10
    assert "![" not in text
    assert (tmp_path / "reports" / "figures").is_dir()
    assert not any((tmp_path / "reports" / "figures").iterdir())


def test_malformed_metrics_exit_2_and_leave_no_report(run_tree: Path) -> None:
    bad = run_tree / "reports" / "metrics" / "pretrain.json"
    bad.write_text("{not json")
    result = runner.invoke(app, report_args(run_tree))
    assert result.exit_code == 2
    assert str(bad) in result.stderr
    assert not (run_tree / "reports" / "report.md").exists()
    assert not (run_tree / "reports" / "figures").exists()


def test_report_is_reproducible(run_tree: Path) -> None:
    args = report_args(run_tree)
    assert runner.invoke(app, args).exit_code == 0
    figures = run_tree / "reports" / "figures"
    first = {p.name: p.read_bytes() for p in figures.iterdir()}
    report = (run_tree / "reports" / "report.md").read_text()
    assert runner.invoke(app, args).exit_code == 0
    assert {p.name: p.read_bytes() for p in figures.iterdir()} == first
    assert (run_tree / "reports" / "report.md").read_text() == report
