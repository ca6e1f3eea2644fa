"""The weights stage: the base model is the pretrained one, byte for byte."""

import pytest
import torch
from typer.testing import CliRunner

from gptpipe.checkpoint import save_model
from gptpipe.cli import app
from gptpipe.config import BaseConfig
from gptpipe.errors import BadInput
from gptpipe.model import GPT, GPTConfig
from gptpipe.stages import weights
from gptpipe.tokenizer import save_tokenizer

runner = CliRunner()


@pytest.fixture
def pretrained(tmp_path):
    save_tokenizer(tmp_path / "tok", {bytes([i]): i for i in range(256)}, "bpe", "gpt2")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, block_size=16, n_layer=1, n_head=2, n_embd=16))
    save_model(tmp_path / "pretrain", model, tmp_path / "tok", meta={"stage": "pretrain"})
    return tmp_path / "pretrain"


def test_source_pretrain_copies_the_pretrained_model(pretrained, tmp_path):
    info = weights.run(BaseConfig(), pretrained, tmp_path / "base")
    assert info["source"] == "pretrain" and info["meta"] == {"stage": "pretrain"}
    files = sorted(p.name for p in pretrained.iterdir())
    assert sorted(p.name for p in (tmp_path / "base").iterdir()) == files
    for name in files:
        assert (tmp_path / "base" / name).read_bytes() == (pretrained / name).read_bytes()


def test_cli_copies_and_replaces_an_old_base(pretrained, tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "stale.txt").write_text("old")
    result = runner.invoke(
        app,
        [
            "weights",
            "--params",
            str(tmp_path / "none.yaml"),
            "--pretrained",
            str(pretrained),
            "--out",
            str(tmp_path / "base"),
        ],
    )
    assert result.exit_code == 2 and "none.yaml" in result.stderr  # params file must exist
    params = tmp_path / "params.yaml"
    params.write_text("base:\n  source: pretrain\n")
    result = runner.invoke(
        app,
        [
            "weights",
            "--params",
            str(params),
            "--pretrained",
            str(pretrained),
            "--out",
            str(tmp_path / "base"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "base" / "stale.txt").exists()
    assert (tmp_path / "base" / "model.safetensors").is_file()


def test_missing_pretrained_model_and_unknown_source_exit_2(tmp_path):
    with pytest.raises(BadInput, match=r"config\.json"):
        weights.run(BaseConfig(), tmp_path / "missing", tmp_path / "base")
    params = tmp_path / "params.yaml"
    params.write_text("base:\n  source: pretrain\n")
    result = runner.invoke(
        app,
        [
            "weights",
            "--params",
            str(params),
            "--pretrained",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "base"),
        ],
    )
    assert result.exit_code == 2 and "missing" in result.stderr
    result = runner.invoke(
        app,
        [
            "weights",
            "--params",
            str(params),
            "-S",
            "base.source=gpt2",
            "--out",
            str(tmp_path / "base"),
        ],
    )
    assert result.exit_code == 2 and "base.source" in result.stderr
    assert not (tmp_path / "base").exists()
