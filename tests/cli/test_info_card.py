"""`gptpipe info MODEL_DIR`: kind, provenance, tokenizer, size and per-block parameters."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.model.folder import save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.model.heads import with_classifier
from gptpipe.model.params import config_breakdown
from gptpipe.model.skipped import write_skipped
from gptpipe.tokenizer.folder import save_gpt2

runner = CliRunner()
CONFIG = GPTConfig(vocab_size=50257, block_size=16, n_layer=2, n_head=2, n_embd=16)


def test_info_names_the_kind_provenance_tokenizer_and_blocks(tmp_path: Path) -> None:
    save_gpt2(tmp_path / "tok")
    torch.manual_seed(0)
    lm = GPT(CONFIG)
    data = {"file": "instruct.json", "sha256": "cd" * 32, "records": 40}
    save_model(tmp_path / "ins", lm, tmp_path / "tok", meta={"stage": "instruct", "data": data})
    save_model(tmp_path / "cls", with_classifier(lm, 2), tmp_path / "tok", labels=["a", "b"])
    result = runner.invoke(app, ["info", str(tmp_path / "ins"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["kind"] == "instruction-tuned"
    assert info["trained_on"] == f"instruct.json (sha256 {'cd' * 8}..., 40 records)"
    assert info["tokenizer"]["kind"] == "gpt2" and info["tokenizer"]["n_vocab"] == 50257
    files = [p for p in (tmp_path / "ins").iterdir()]
    assert info["size_bytes"] == sum(p.stat().st_size for p in files)
    assert sum(info["blocks"].values()) == config_breakdown(CONFIG)["total"]
    assert info["blocks"]["block 1 MLP"] == 16 * 64 + 64 + 64 * 16 + 16
    result = runner.invoke(app, ["info", str(tmp_path / "cls")])
    assert result.exit_code == 0, result.output
    shown = " ".join(result.stdout.split())  # rich wraps long lines at the terminal width
    assert "(classifier model)" in shown and "Parameters per block" in shown
    assert "tokenizer: gpt2, vocabulary 50,257" in shown
    both = runner.invoke(app, ["info", str(tmp_path / "cls"), "--model", str(tmp_path / "cls")])
    assert both.exit_code == 2


def test_info_on_a_skipped_pretraining_says_so(tmp_path: Path) -> None:
    write_skipped(tmp_path / "pre", "pretrain", "base.source is 'gpt2'", base_source="gpt2")
    result = runner.invoke(app, ["info", str(tmp_path / "pre")])
    assert result.exit_code == 0, result.output
    assert "skipped, base.source is 'gpt2'" in " ".join(result.stdout.split())
    data = json.loads(runner.invoke(app, ["info", str(tmp_path / "pre"), "--json"]).stdout)
    assert data["skipped"] is True and data["base_source"] == "gpt2"
