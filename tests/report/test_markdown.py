"""Report building blocks: parameter groups, curve reading, figures, Markdown pieces."""

from __future__ import annotations

import hashlib
import math
import os
import platform
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from matplotlib.image import imread

from gptpipe.errors import BadInput
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.model.heads import with_classifier
from gptpipe.model.params import config_breakdown, parameter_breakdown
from gptpipe.report.environment import CPU_FLAGS, collect_environment
from gptpipe.report.figures import confusion_counts, figure_curves, plot_confusion, plot_curves
from gptpipe.report.history import committed_metrics, metric_changes
from gptpipe.report.inputs import ReportInputs, read_curve
from gptpipe.report.markdown import (
    RESPONSE_ROWS,
    _responses_section,
    block_rows,
    class_scores,
    summary_rows,
)
from gptpipe.report.samples import sample_heading
from gptpipe.report.text import NOT_RUN, fenced, fmt

SMALL = GPTConfig(vocab_size=100, block_size=8, n_layer=3, n_head=2, n_embd=16)


def test_breakdown_groups_add_up_and_count_the_tied_head_once() -> None:
    model = GPT(SMALL)
    counts = parameter_breakdown(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["embeddings"] == (100 + 8) * 16
    assert counts["attention"] == 3 * (16 * 48 + 48 + 16 * 16 + 16)
    assert counts["mlp"] == 3 * (16 * 64 + 64 + 64 * 16 + 16)
    assert counts["layer_norms"] == (2 * 3 + 1) * 2 * 16
    assert counts["head"] == 0
    assert config_breakdown(SMALL) == counts
    classifier = with_classifier(model, 3)
    assert parameter_breakdown(classifier)["head"] == 16 * 3 + 3
    no_bias = GPTConfig(**{**SMALL.to_dict(), "bias": False})
    assert config_breakdown(no_bias)["layer_norms"] == (2 * 3 + 1) * 16


def test_gpt2_small_has_124m_parameters() -> None:
    gpt2 = GPTConfig()  # 124M: the published count with the tied head counted once
    assert config_breakdown(gpt2)["total"] == 124_439_808


def test_read_curve_columns_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "val.csv"
    good.write_text("step,val_loss,val_accuracy\n10,2.5,\n20,2.0,0.75\n")
    columns = read_curve(good)
    assert columns["step"] == [10.0, 20.0]
    assert columns["val_loss"] == [2.5, 2.0]
    assert math.isnan(columns["val_accuracy"][0]) and columns["val_accuracy"][1] == 0.75
    for text, message in (
        ("loss,step\n1,2\n", "first column is 'step'"),
        ("step,loss\n1,x\n", "not a number"),
        ("step,loss\n1\n", "has 1 fields"),
    ):
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(BadInput, match=message):
            read_curve(bad)
    with pytest.raises(BadInput, match="not found"):
        read_curve(tmp_path / "missing.csv")


def test_plot_curves_writes_a_png_only_when_there_is_data(tmp_path: Path) -> None:
    curves = {
        "train": {"step": [1.0, 2.0, 3.0], "train_loss": [3.0, 2.5, 2.2], "lr": [1, 1, 1]},
        "val": {"step": [3.0], "val_loss": [2.4], "val_accuracy": [math.nan]},
    }
    assert figure_curves(curves, "loss") == [("train", "train_loss"), ("val", "val_loss")]
    assert figure_curves(curves, "accuracy") == []  # only NaN: nothing to draw
    out = tmp_path / "loss.png"
    assert plot_curves("pretrain", curves, "loss", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = imread(out).shape
    assert (width, height) == (704, 396)  # 6.4 x 3.6 inches at 110 dpi
    assert not plot_curves("pretrain", curves, "accuracy", tmp_path / "acc.png")
    assert not (tmp_path / "acc.png").exists()


def test_fmt_and_fenced() -> None:
    assert fmt(1234567) == "1,234,567"
    assert fmt(2.345678) == "2.346"
    assert fmt(0.00001234) == "1.234e-05"
    assert fmt(None) == NOT_RUN
    block = fenced("a ``` b")
    assert block.startswith("````text\n") and block.endswith("\n````")


def test_summary_rows_say_not_run_for_missing_stages() -> None:
    rows = summary_rows(ReportInputs(title=""))
    assert {r[0] for r in rows} == {"pretrain", "weights", "evaluate", "instruct", "classify"}
    assert all(r[2] == NOT_RUN for r in rows)
    runs = {
        "classify": {"test_accuracy": 0.9, "majority_baseline_test": 0.6},
        "evaluate": {"base": {"perplexity": 12.5, "bits_per_byte": 1.25, "stride": 64}},
    }
    rows = summary_rows(ReportInputs(title="", runs=runs))
    assert ["classify", "test accuracy", "0.9", "fraction", "majority baseline 0.6"] in rows
    assert ["evaluate", "base: val perplexity", "12.5", "per token", ""] in rows
    assert ["evaluate", "base: bits per byte", "1.25", "bits/byte", ""] in rows


def test_a_single_point_curve_is_drawn_with_a_marker(tmp_path: Path) -> None:
    curves = {"train": {"step": [5.0], "train_loss": [2.0], "lr": [1e-3]}}
    for kind in ("loss", "lr"):
        out = tmp_path / f"{kind}.png"
        assert plot_curves("instruct", curves, kind, out)
        pixels = imread(out)[:, :, :3]
        # the marker: a blob of the line colour (matplotlib's C0 blue) in the plot area
        blue = (abs(pixels[:, :, 0] - 0.12) < 0.1) & (abs(pixels[:, :, 2] - 0.71) < 0.1)
        assert blue.sum() > 20, kind


def test_confusion_figure_and_per_class_scores(tmp_path: Path) -> None:
    rows = [{"actual": "ham", "predicted": "ham"}] * 6 + [{"actual": "spam", "predicted": "ham"}]
    rows += [{"actual": "spam", "predicted": "spam"}] * 3
    assert confusion_counts(rows) == (["ham", "spam"], [[6, 0], [1, 3]])
    assert plot_confusion(rows, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    scores = {r[0]: r[1:] for r in class_scores(rows)}
    assert scores["ham"] == ["0.8571", "1", "0.9231", "6"]  # precision 6/7, recall 6/6
    assert scores["spam"] == ["1", "0.75", "0.8571", "4"]
    assert not plot_confusion([], tmp_path / "none.png")


def test_block_rows_add_up_to_the_breakdown() -> None:
    rows = block_rows(SMALL)
    parts = {r[0]: int(r[1].replace(",", "")) for r in rows if r[2] and r[0] != "total"}
    total = config_breakdown(SMALL)["total"]
    assert sum(parts.values()) == total and rows[-1][:2] == ["total", f"{total:,}"]
    assert parts["block 2 attention"] == 16 * 48 + 48 + 16 * 16 + 16
    assert parts["block 0 norms"] == 2 * 2 * 16 and parts["final norm"] == 2 * 16
    assert ["head", "tied to wte", ""] in rows


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_committed_metrics_come_from_heads_dvc_lock_and_the_cache(tmp_path: Path) -> None:
    metrics = tmp_path / "reports" / "metrics"
    metrics.mkdir(parents=True)
    files = {"pretrain": metrics / "pretrain.json"}
    git(tmp_path, "init", "-q")
    assert committed_metrics(tmp_path, files) is None  # no commit: the first run
    old = b'{"val_loss": 2.5, "base": {"perplexity": 9.0}}'
    md5 = hashlib.md5(old).hexdigest()
    cached = tmp_path / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(old)
    lock = {"schema": "2.0", "stages": {"pretrain": {"cmd": "x", "outs": [
        {"path": "reports/metrics/pretrain.json", "hash": "md5", "md5": md5, "size": len(old)}
    ]}}}  # fmt: skip
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    git(tmp_path, "add", "dvc.lock")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run")
    previous = committed_metrics(tmp_path, files)
    assert previous == {"pretrain": {"val_loss": 2.5, "base": {"perplexity": 9.0}}}
    current = {"pretrain": {"val_loss": 2.0, "base": {"perplexity": 9.0}, "new": 1}}
    assert metric_changes(current, previous) == [
        ("pretrain", "base.perplexity", 9.0, 9.0, 0.0),
        ("pretrain", "new", None, 1.0, None),
        ("pretrain", "val_loss", 2.5, 2.0, -0.5),
    ]


def test_environment_names_this_machine(tmp_path: Path) -> None:
    env = collect_environment(tmp_path)
    assert env["python"] == platform.python_version()
    assert env["packages"]["torch"] == torch.__version__
    assert env["cpu"]["threads"] == os.cpu_count()
    assert set(env["cpu"]["flags"]) <= set(CPU_FLAGS)
    if Path("/proc/cpuinfo").exists():  # Linux: the numbers that tell same-named CPUs apart
        info = Path("/proc/cpuinfo").read_text()
        family = next(line for line in info.splitlines() if line.startswith("cpu family"))
        assert env["cpu"]["family"] == int(family.split(":")[1])
        assert isinstance(env["cpu"]["model_number"], int)
    assert env["git"] == {"commit": None, "dirty": None}  # not a git checkout
    git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("a")
    git(tmp_path, "add", "a.txt")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    assert collect_environment(tmp_path)["git"]["dirty"] is False
    (tmp_path / "a.txt").write_text("b")
    assert collect_environment(tmp_path)["git"]["dirty"] is True


def test_sample_headings_name_the_setting_and_its_rules() -> None:
    base = {"method": "sample", "decoding": "nucleus", "sample": 2, "temperature": 0.8,
            "top_k": 0, "top_p": 0.9, "repetition_penalty": 1.2, "format": "raw"}  # fmt: skip
    assert sample_heading(base) == "nucleus 2: temperature 0.8, top-p 0.9, repetition penalty 1.2"
    beam = {"method": "beam", "decoding": "beam", "num_beams": 4, "length_penalty": 1.0,
            "top_k": 40, "temperature": 0.0, "format": "alpaca"}  # fmt: skip
    assert sample_heading(beam) == "beam: 4 beams, length penalty 1 (alpaca prompt)"
    assert sample_heading({"method": "greedy", "decoding": "greedy", "top_k": 40}) == "greedy"


def test_a_long_responses_list_is_cut_to_the_first_rows() -> None:
    records = [
        {"instruction": f"Task {i}", "reference": "r", "response": "x", "rougeL": 0.0}
        for i in range(RESPONSE_ROWS + 5)
    ]
    text = "\n".join(_responses_section(ReportInputs(title="", responses=records)))
    assert f"| {RESPONSE_ROWS} | Task {RESPONSE_ROWS - 1} |" in text
    assert f"| {RESPONSE_ROWS + 1} |" not in text
    assert f"the first {RESPONSE_ROWS} of {RESPONSE_ROWS + 5}, all in" in text
