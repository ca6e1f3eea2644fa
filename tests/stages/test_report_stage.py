"""The report stage: report.md with the metric values, working image links, and examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from helpers import said
from markdown_it import MarkdownIt
from matplotlib.image import imread
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.generate.attention import draw_attention
from gptpipe.model.folder import save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.model.heads import with_classifier
from gptpipe.model.params import config_breakdown
from gptpipe.report.text import NOT_RUN
from gptpipe.tokenizer.folder import load_tokenizer, save_gpt2

runner = CliRunner()
CONFIG = GPTConfig(vocab_size=50257, block_size=32, n_layer=2, n_head=2, n_embd=32)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture()
def run_tree(tmp_path: Path) -> Path:
    """What a full pipeline run leaves behind, with recognisable values."""
    reports = tmp_path / "reports"
    # The DVC metrics: a headline figure per stage; the rest is in the run details below.
    metrics = {
        "pretrain": {"pretrain": {"val_loss": 3.5}},
        "instruct": {"instruct": {"rougeL": 0.5}},
        "classify": {"classify": {"test_accuracy": 0.8642}},
        "evaluate": {"base": {"bits_per_byte": 1.3579}},
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
    responses = [dict(ex, base_response="Lyon?", rougeL=0.5, base_rougeL=0.125) for ex in examples]
    write(reports / "instruct" / "responses.json", json.dumps(responses))
    confusion = [{"actual": "ham", "predicted": "ham"}] * 5 + [
        {"actual": "spam", "predicted": "ham"},
        {"actual": "spam", "predicted": "spam"},
    ]
    write(reports / "plots" / "classify" / "confusion.json", json.dumps(confusion))
    runs = {
        "pretrain": {"steps": 600, "tokens": 1_228_800, "seconds": 61.5, "tokens_per_s": 20000.0,
                     "best_step": 500, "best_val_loss": 3.4, "device": "cpu", "processes": 1,
                     "train_loss": 3.14159, "val_loss": 3.5, "val_perplexity": 33.115,
                     "kept": "final", "kept_step": 600,
                     "params": {"model": {"n_layer": 2, "vocab_size": 50257},
                                "pretrain": {"learning_rate": 0.0005, "max_steps": 600,
                                             "eval_batches": 20, "keep": "final"}}},
        "instruct": {"steps": 200, "tokens": 51200, "seconds": 9.25, "tokens_per_s": 5535.0,
                     "train_loss": 1.23456, "val_loss": 1.75, "best_val_loss": 1.7,
                     "best_step": 150, "kept": "final", "kept_step": 200, "device": "cpu",
                     "test_rougeL": 0.5, "base_test_rougeL": 0.125,
                     "params": {"instruct": {"max_steps": 200, "epochs": 0.0}}},
        "classify": {"steps": 200, "tokens": 102400, "seconds": 7.75, "tokens_per_s": 13212.9,
                     "wall_seconds": 8.5, "majority_baseline_train": 0.5,
                     "majority_baseline_val": 0.55, "train_loss": 0.25, "val_loss": 0.5,
                     "best_val_loss": 0.45, "best_step": 100, "kept": "best", "kept_step": 100,
                     "train_accuracy": 0.9876, "val_accuracy": 0.8765, "test_accuracy": 0.8642,
                     "majority_baseline_test": 0.5432, "untuned_test_accuracy": 0.5,
                     "labels": ["ham", "spam"], "device": "cpu",
                     "params": {"classify": {"max_steps": 200, "epochs": 5.0, "keep": "best"}}},
        "download": {"bytes": 3702, "wall_seconds": 1.25,
                     "params": {"data": {"corpus": "stdlib", "instruct": "stdlib",
                                         "classify": "stdlib"}}},
        "tokenizer": {"kind": "gpt2", "wall_seconds": 0.5},
        "shard": {"tokens": 10_000, "wall_seconds": 2.0},
        "weights": {"source": "pretrain", "wall_seconds": 0.25,
                    "params": {"base": {"source": "pretrain"}}},
        "sample": {"samples": 2, "wall_seconds": 4.0},
        "evaluate": {"wall_seconds": 3.5,
            "base": {"perplexity": 41.0371, "bits_per_byte": 1.3579, "tokens": 900,
                     "bytes": 2700, "stride": 64, "block_size": 32},
            "instruct": {"perplexity": 47.2468, "bits_per_byte": 1.4321, "tokens": 900,
                         "bytes": 2700, "stride": 64, "block_size": 32},
        },
    }  # fmt: skip
    for name, data in runs.items():
        write(reports / "runs" / f"{name}.json", json.dumps(data))
    provenance = {
        kind: {"source": "stdlib", "location": "Python stdlib", "license": "PSF-2.0",
               "output": {"file": f"{kind}.x", "sha256": "ab" * 32, "bytes": 1234},
               "counts": {"documents": 12}}
        for kind in ("corpus", "instruct", "classify")
    }  # fmt: skip
    write(tmp_path / "data" / "raw" / "provenance.json", json.dumps(provenance))
    splits = {"train": {"tokens": 9000}, "val": {"tokens": 1000}}
    manifest = {"vocab_size": 50257, "tokens": 10_000, "corpus_bytes": 30_000, "documents": 12,
                "dtype": "uint16", "splits": splits}  # fmt: skip
    write(tmp_path / "data" / "shards" / "manifest.json", json.dumps(manifest))
    save_gpt2(tmp_path / "tok")
    torch.manual_seed(0)
    lm = GPT(CONFIG)
    save_model(tmp_path / "models" / "base", lm, tmp_path / "tok")
    save_model(tmp_path / "models" / "instruct", lm, tmp_path / "tok", meta={"stage": "instruct"})
    # The sample stage's attention maps: one PNG per layer and the record naming them.
    attention = reports / "attention"
    prompt = "The cat sat on the mat."
    layers = draw_attention(lm, load_tokenizer(tmp_path / "tok"), prompt, attention)
    record = {"model": "instruct", "prompt": prompt, "tokens": 7, "heads": 2,
              "layers": [p.name for p in layers]}  # fmt: skip
    write(attention / "attention.json", json.dumps(record))
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
    args += [
        "--runs",
        str(reports / "runs"),
        "--responses",
        str(reports / "instruct" / "responses.json"),
    ]
    args += ["--provenance", str(root / "data" / "raw" / "provenance.json")]
    args += ["--shards", str(root / "data" / "shards"), "--tokenizer", str(root / "tok")]
    args += ["--attention", str(reports / "attention")]
    params = root / "params.yaml"
    # Only the report's own section: the params shown come from the stages' run details.
    params.write_text("report:\n  title: Test run 42\npretrain: {learning_rate: 0.1}\n")
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
    test_row = (
        "| classify | test accuracy | 0.8642 | fraction | majority baseline 0.5432; "
        "untuned head 0.5 |"
    )
    assert test_row in text
    assert "| lowest val loss in training (20 val batches) | 3.4 (step 500) |" in text
    # as the stage ran it (its run details), not params.yaml's 0.1
    assert "| pretrain | max_steps `600`, learning_rate `0.0005`, keep `final` |" in text
    assert "| classify | val accuracy | 0.8765 | fraction | majority baseline 0.55 |" in text
    assert "| classify | max_steps `200`, epochs `5`, keep `best` |" in text
    kept = "| weights kept | best: those of the lowest val loss (step 100; classify.keep: best) |"
    assert kept in text
    assert "| steps | 200 (from classify.epochs 5) |" in text
    assert "| val loss, kept weights (nats): whole val split | 0.5 |" in text
    assert "not recorded" not in text.split("## Training")[1].split("## Classification")[0]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == [
        "attention/layer_01.png",  # the last layer's heatmap
        "figures/classify_accuracy.png",
        "figures/classify_confusion.png",
        "figures/classify_loss.png",
        "figures/classify_lr.png",
        "figures/instruct_loss.png",
        "figures/instruct_lr.png",
        "figures/pretrain_loss.png",
        "figures/pretrain_lr.png",
    ]
    others = re.findall(r"(?<!!)\[layer \d+\]\((attention/[^)]+)\)", text)
    assert others == ["attention/layer_00.png"]  # the other layers, linked
    links += others
    for link in links:
        assert (report_path.parent / link).read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (run_tree / "reports" / "figures").iterdir()) == sorted(
        Path(link).name for link in links if link.startswith("figures/")
    )
    lm_total = config_breakdown(CONFIG)["total"]
    assert text.count(f"| {lm_total:,} |") == 3  # base, instruct and the per-block total
    assert f"| {lm_total + 32 * 2 + 2:,} |" in text  # the classifier's head adds 66
    assert "ham, spam" in text
    for snippet in ("Name the capital of France.", "Paris is the capital.", "2 and 3"):
        assert snippet in text
    assert "| decoding | base |\n|---|---|\n| greedy | `quick brown fox` |" in text
    assert "### prompt 'The ' as an alpaca instruction" in text
    assert "| sample 1: temperature 0.8, top-k 40 | ```` lazy ```dog``` ```` |" in text
    assert NOT_RUN not in text


def test_report_ends_with_one_line_saying_what_it_wrote(run_tree: Path) -> None:
    result = runner.invoke(app, report_args(run_tree))
    assert result.exit_code == 0, result.output
    reports = run_tree / "reports"
    assert said.wrote(result.stderr, "report") == (
        "",
        said.paths(reports / "report.md", reports / "figures"),
    )


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


def test_report_card_sections_in_order_and_rendered_as_html(
    run_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(run_tree)  # no git checkout here: no committed run to compare with
    result = runner.invoke(app, report_args(run_tree))
    assert result.exit_code == 0, result.output
    report_path = run_tree / "reports" / "report.md"
    text = report_path.read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert headings == [
        "Summary",
        "Params",
        "Environment",
        "Data",
        "Tokenizer",
        "Training",
        "Classification",
        "Instruction responses",
        "Attention",
        "Parameters",
        "Samples",
        "Evaluation",
        "Change against the last committed run",
        "Wall time",
    ]
    assert (
        "| instruct | mean ROUGE-L (test responses) | 0.5 | fraction | untuned base 0.125 |"
    ) in text
    assert "| pretrain | val perplexity | 33.12 | per token | uniform guess 50,257 |" in text
    assert "| weights | base model | pretrain |  |  |" in text
    assert "| ham | 0.8333 | 1 | 0.9091 | 5 |" in text  # precision 5/6, recall 5/5
    assert "| compression on validation text | 3.000 bytes per token |" in text
    assert "| training time | 61.5 s (1 min 02 s) |" in text
    assert "| tokens/s (whole run) | 20,000 |" in text
    assert "MFU" not in text.split("## Training")[1].split("###")[1]  # FLOP/s, no peak on a CPU
    assert "model `instruct`" in text and "“The cat sat on the mat.”" in text
    wall = text.split("## Wall time")[1]
    for row in (
        "| download | 1.25 s |  |",
        "| finetune-classify | 8.50 s |  |",
        "| finetune-instruct | 9.25 s | training loop only |",
        "| sample | 4.00 s |  |",
    ):
        assert row in wall, row  # fmt: skip
    # 1.25 + 0.5 + 2 + 61.5 (pretrain: training only) + 0.25 + 9.25 + 8.5 + 3.5 + 4 = 90.75
    assert "| **total** | **90.8 s (1 min 31 s)** |  |" in wall
    assert "Corpus: 30,000 bytes, 12 documents, 3.000 bytes per token" in text
    assert "| corpus | stdlib | Python stdlib | PSF-2.0 | `abababababababab` | 1,234 |" in text
    assert "No committed run to compare with" in text  # the run tree is no git checkout
    assert "git add dvc.lock && git commit" in text
    first = "| 1 | Name the capital of France. | Paris. | Paris is the capital. | 0.5 | Lyon? |"
    assert f"{first} 0.125 |" in text
    assert "| 2 | Add the numbers. (input: 2 and 3) | 5 | 6 | 0.5 | Lyon? | 0.125 |" in text
    assert "| not a git checkout |" in text
    # As a reader sees it: every image the HTML shows exists and is a PNG.
    html = MarkdownIt("commonmark").enable("table").render(text)
    assert "<table>" in html and "<h2>Summary</h2>" in html
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == 9  # 8 figures and one attention heatmap
    for src in images:
        data = (report_path.parent / src).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", src
        height, width, _ = imread(report_path.parent / src).shape
        assert width >= 600 and height >= 350, src


def test_report_says_which_base_and_that_pretraining_was_skipped(run_tree: Path) -> None:
    reports = run_tree / "reports"
    (reports / "metrics" / "pretrain.json").write_text("{}")
    skipped = {
        "skipped": True,
        "reason": "base.source is 'gpt2': the base model comes from there",
        "wall_seconds": 0.125,
    }
    (reports / "runs" / "pretrain.json").write_text(json.dumps(skipped))
    for name in ("train.csv", "val.csv"):
        (reports / "plots" / "pretrain" / name).write_text("step,train_loss,lr\n")
    save_model(
        run_tree / "models" / "base",
        GPT(CONFIG),
        run_tree / "tok",
        meta={"stage": "weights", "source": "gpt2"},
    )
    result = runner.invoke(app, report_args(run_tree))
    assert result.exit_code == 0, result.output
    text = (reports / "report.md").read_text()
    assert "| pretrain | skipped | base.source: gpt2 |  |" in text
    assert "| weights | base model | gpt2 |  |" in text
    assert "Skipped: base.source is 'gpt2': the base model comes from there." in text
    assert "| pretrain | 0.12 s | skipped: nothing trained |" in text.split("## Wall time")[1]
    assert "pretrain_loss.png" not in text
