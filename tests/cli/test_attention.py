"""`gptpipe attention`: one readable PNG per layer, from explicitly captured weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.faults import small_fs
from matplotlib.image import imread
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.generate.attention import attention_weights, draw_attention
from gptpipe.model.folder import load_language_model, save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.model.heads import with_classifier
from gptpipe.tokenizer.folder import save_gpt2

runner = CliRunner()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("attention")
    save_gpt2(root / "tok")
    torch.manual_seed(0)
    lm = GPT(GPTConfig(vocab_size=50257, block_size=16, n_layer=2, n_head=3, n_embd=24))
    save_model(root / "lm", lm, root / "tok")
    save_model(root / "cls", with_classifier(lm, 2), root / "tok", labels=["a", "b"])
    return {"lm": root / "lm", "cls": root / "cls"}


def test_one_png_per_layer_with_heads_in_a_grid(folders: dict[str, Path], tmp_path: Path) -> None:
    model, enc = load_language_model(folders["lm"], "cpu")
    paths = draw_attention(model, enc, "The cat sat on the mat.", tmp_path / "maps")
    assert [p.name for p in paths] == ["layer_00.png", "layer_01.png"]
    image = imread(paths[0])
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.05  # drawn, not blank
    weights = attention_weights(model, enc.encode_ordinary("The cat sat on the mat."))
    assert len(weights) == 2 and weights[0].shape == (3, 7, 7)
    torch.testing.assert_close(weights[1].sum(-1), torch.ones(3, 7))


def test_cli_writes_the_maps_and_refuses_a_classifier(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "maps"
    args = ["attention", "--model", str(folders["lm"]), "--out", str(out)]
    result = runner.invoke(app, [*args, "--text", "word " * 40])  # longer than the context
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["layer_00.png", "layer_01.png"]
    assert "context of 16" in result.stderr
    result = runner.invoke(app, ["attention", "--model", str(folders["cls"]), "--text", "x"])
    assert result.exit_code == 2 and str(folders["cls"]) in result.stderr
    assert "classifier" in result.stderr


def test_cli_maps_appear_together_and_replace_an_earlier_runs(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """A shallower model's maps leave none of a deeper one's layers behind; a disk that fills
    half-way leaves the earlier maps whole and nothing else, the message naming --out."""
    out = tmp_path / "maps"
    deep = ["attention", "--model", str(folders["lm"]), "--out", str(out), "--text", "a b"]
    assert runner.invoke(app, deep).exit_code == 0
    torch.manual_seed(1)
    shallow = GPT(GPTConfig(vocab_size=50257, block_size=16, n_layer=1, n_head=3, n_embd=24))
    save_model(tmp_path / "shallow", shallow, folders["lm"])
    args = ["attention", "--model", str(tmp_path / "shallow"), "--out", str(out), "--text", "a"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["layer_00.png"]
    assert result.stdout.split() == [str(out / "layer_00.png")]
    with small_fs(tmp_path / "full", "96k") as full:
        runner.invoke(app, [*deep[:-4], "--out", str(full / "maps"), "--text", "x"])
        before = sorted(p.name for p in (full / "maps").iterdir())
        long_text = ["--text", "word " * 15]  # bigger figures: past the 96 KiB
        result = runner.invoke(app, [*deep[:-4], "--out", str(full / "maps"), *long_text])
        assert result.exit_code == 2, result.output
        assert str(full / "maps") in result.stderr and "no space left" in result.stderr
        assert sorted(p.name for p in (full / "maps").iterdir()) == before
        assert [p.name for p in full.iterdir()] == ["maps"]
