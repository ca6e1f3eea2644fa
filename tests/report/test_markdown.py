"""Report building blocks: parameter groups, curve reading, figures, Markdown pieces."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from matplotlib.image import imread

from gptpipe.errors import BadInput
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.model.heads import with_classifier
from gptpipe.model.params import config_breakdown, parameter_breakdown
from gptpipe.report.figures import figure_curves, plot_curves
from gptpipe.report.inputs import read_curve
from gptpipe.report.markdown import fenced, fmt, summary_rows
from gptpipe.report.text import NOT_RUN

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
    assert (width, height) == (640, 360)
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
    rows = summary_rows({})
    assert {r[0] for r in rows} == {"pretrain", "evaluate", "instruct", "classify"}
    assert all(r[2] == NOT_RUN for r in rows)
    rows = summary_rows(
        {
            "classify": {"test_accuracy": 0.9, "majority_baseline_test": 0.6},
            "evaluate": {"base": {"perplexity": 12.5, "bits_per_byte": 1.25, "stride": 64}},
        }
    )
    assert ["classify", "test accuracy", "0.9", "majority baseline 0.6"] in rows
    assert ["evaluate", "base: val perplexity", "12.5", "sliding window, stride 64"] in rows
    assert ["evaluate", "base: bits per byte", "1.25", ""] in rows
