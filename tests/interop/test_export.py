"""`gptpipe export --format hf`: transformers loads the folder and computes the same logits;
the exported tokenizer encodes like ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.gpt2 import TEXT
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.interop import gpt2_formats
from gptpipe.model.folder import load_model, save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.model.heads import with_classifier
from gptpipe.tokenizer.bpe import train_bpe
from gptpipe.tokenizer.folder import PATTERNS, load_tokenizer, save_gpt2, save_tokenizer
from gptpipe.tokenizer.special import EOT

transformers = pytest.importorskip("transformers")
runner = CliRunner()
CORPUS = [TEXT, Path(gpt2_formats.__file__).read_text(encoding="utf-8")]
SAMPLE = "Hello world! It's 2024: naïve café — résumé's 12345 tokens.\n\n  spaced   out\tand tabs"


def _export(model_dir, out_dir):
    return runner.invoke(app, ["export", "--format", "hf", str(model_dir), str(out_dir)])


def _check_logits(model_dir, out_dir, vocab: int) -> None:
    ours, _ = load_model(model_dir)
    hf = transformers.GPT2LMHeadModel.from_pretrained(out_dir).eval()
    ids = torch.randint(0, vocab, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours(ids)[0] - hf(ids).logits).abs().max().item() < 1e-4


def _weights(source: Path, tokenizer: Path, out: Path):
    """`gptpipe weights` with base.source = an exported folder."""
    params = out.parent / f"{out.name}-params.yaml"
    params.write_text(f"base:\n  source: {source}\n")
    args = ["weights", "--params", str(params), "--tokenizer", str(tokenizer), "--out", str(out)]
    return runner.invoke(app, args)


def _check_converts_back(model: GPT, hf: Path, tokenizer: Path, tmp_path: Path) -> None:
    result = _weights(hf, tokenizer, tmp_path / "base")
    assert result.exit_code == 0, result.output
    back, _ = load_model(tmp_path / "base")
    assert back.config == model.config
    for name, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name


@pytest.mark.parametrize("bias", [True, False])
def test_gpt2_vocabulary_model_exports_with_same_logits_and_tokenizer(tmp_path, bias):
    save_gpt2(tmp_path / "tok")
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=50257, block_size=64, n_layer=2, n_head=2, n_embd=32, bias=bias)
    )
    save_model(tmp_path / "model", model, tmp_path / "tok")
    result = _export(tmp_path / "model", tmp_path / "hf")
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "->" in result.stderr  # the summary goes to stderr
    _check_logits(tmp_path / "model", tmp_path / "hf", 50257)
    if bias:
        tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
        ours = load_tokenizer(tmp_path / "tok")
        assert tok.encode(SAMPLE) == ours.encode_ordinary(SAMPLE)
        assert tok.convert_tokens_to_ids("<|endoftext|>") == 50256
        assert tok.decode(ours.encode_ordinary(SAMPLE)) == SAMPLE


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_trained_bpe_exports_a_tokenizer_that_encodes_identically(tmp_path, pattern):
    """Pattern gpt2: the tokenizer encodes identically; gpt4: weights only, with a note."""
    trained = train_bpe(CORPUS, 400, PATTERNS[pattern], show_progress=False)
    save_tokenizer(tmp_path / "tok", trained.ranks, "bpe", pattern)
    ours = load_tokenizer(tmp_path / "tok")
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=ours.n_vocab, block_size=32, n_layer=1, n_head=2, n_embd=16))
    save_model(tmp_path / "model", model, tmp_path / "tok")
    result = _export(tmp_path / "model", tmp_path / "hf")
    assert result.exit_code == 0, result.output
    _check_logits(tmp_path / "model", tmp_path / "hf", ours.n_vocab)
    if pattern == "gpt4":
        assert "no tokenizer written" in result.stderr
        assert not (tmp_path / "hf" / "tokenizer.json").exists()
        return
    for loaded in (
        transformers.AutoTokenizer.from_pretrained(tmp_path / "hf"),
        transformers.GPT2TokenizerFast.from_pretrained(tmp_path / "hf"),
    ):
        for text in (SAMPLE, TEXT[:500]):
            assert loaded.encode(text) == ours.encode_ordinary(text)
            assert loaded.decode(loaded.encode(text)) == text


@pytest.mark.parametrize("gelu", ["tanh", "exact"])
def test_exported_bpe_model_converts_back_with_its_tokenizer(tmp_path, gelu):
    trained = train_bpe(CORPUS, 300, PATTERNS["gpt2"], show_progress=False)
    save_tokenizer(tmp_path / "tok", trained.ranks, "bpe", "gpt2")
    torch.manual_seed(2)
    config = GPTConfig(vocab_size=300, block_size=32, n_layer=1, n_head=2, n_embd=16, gelu=gelu)
    model = GPT(config)
    save_model(tmp_path / "model", model, tmp_path / "tok")
    assert _export(tmp_path / "model", tmp_path / "hf").exit_code == 0
    _check_logits(tmp_path / "model", tmp_path / "hf", 300)  # transformers computes our GELU
    _check_converts_back(model, tmp_path / "hf", tmp_path / "tok", tmp_path)
    save_gpt2(tmp_path / "gpt2tok")  # a different tokenizer is refused
    result = _weights(tmp_path / "hf", tmp_path / "gpt2tok", tmp_path / "base2")
    assert result.exit_code == 2 and "vocabulary of 300 ids" in result.stderr


def test_classifier_and_missing_folders_are_refused(tmp_path):
    save_gpt2(tmp_path / "tok")
    model = GPT(GPTConfig(vocab_size=50257, block_size=16, n_layer=1, n_head=2, n_embd=16))
    save_model(tmp_path / "cls", with_classifier(model, 2), tmp_path / "tok", labels=["a", "b"])
    result = _export(tmp_path / "cls", tmp_path / "hf")
    assert result.exit_code == 2 and "classifier" in result.stderr
    assert not (tmp_path / "hf").exists()
    result = _export(tmp_path / "nothing", tmp_path / "hf")
    assert result.exit_code == 2 and "nothing" in result.stderr


def test_extra_special_tokens_export_as_added_special_tokens_with_our_ids(tmp_path):
    extra = ["<|im_start|>", "<|im_end|>", "<|pad|>"]
    trained = train_bpe(CORPUS, 400, PATTERNS["gpt2"], show_progress=False, extra_specials=3)
    save_tokenizer(tmp_path / "tok", trained.ranks, "bpe", "gpt2", special_tokens=extra)
    ours = load_tokenizer(tmp_path / "tok")
    ids = {token: ours.encode_single_token(token) for token in ["<|endoftext|>", *extra]}
    assert list(ids.values()) == [396, 397, 398, 399]
    torch.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=400, block_size=32, n_layer=1, n_head=2, n_embd=16))
    save_model(tmp_path / "model", model, tmp_path / "tok")
    result = _export(tmp_path / "model", tmp_path / "hf")
    assert result.exit_code == 0, result.output
    _check_logits(tmp_path / "model", tmp_path / "hf", 400)
    hf = tmp_path / "hf"
    added = json.loads((hf / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    assert [(t["content"], t["id"], t["special"]) for t in added] == [
        (token, i, True) for token, i in ids.items()
    ]
    vocab = json.loads((hf / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 400 and all(vocab[token] == i for token, i in ids.items())
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        config = json.loads((hf / name).read_text(encoding="utf-8"))
        assert config["additional_special_tokens"] == extra and config["eos_token"] == EOT
    hf_config = json.loads((hf / "config.json").read_text(encoding="utf-8"))
    assert hf_config["eos_token_id"] == hf_config["bos_token_id"] == 396
    text = "<|im_start|>user\nHello world!<|im_end|>\n<|im_start|>assistant\nHi<|pad|><|pad|>" + EOT
    expected = ours.encode(text, allowed_special="all")
    for loaded in (
        transformers.AutoTokenizer.from_pretrained(hf),
        transformers.GPT2TokenizerFast.from_pretrained(hf),
    ):
        assert len(loaded) == 400
        assert loaded.convert_tokens_to_ids(list(ids)) == list(ids.values())
        assert set(ids) <= set(loaded.all_special_tokens)
        assert loaded.encode(text) == expected and loaded.decode(expected) == text
        assert loaded.decode(expected, skip_special_tokens=True) == ours.decode(
            [i for i in expected if i < 396]
        )
    # The exported folder converts back (its vocab.json lists the special tokens too).
    _check_converts_back(model, hf, tmp_path / "tok", tmp_path)


def test_special_token_spelt_like_a_vocab_json_token_is_refused(tmp_path):
    """vocab.json spells the byte token b" a" as "Ġa": a special token "Ġa" would clash."""
    ranks = {bytes([b]): b for b in range(256)} | {b" a": 256}
    save_tokenizer(tmp_path / "tok", ranks, "bpe", "gpt2", special_tokens=["\u0120a"])
    model = GPT(GPTConfig(vocab_size=259, block_size=8, n_layer=1, n_head=2, n_embd=16))
    save_model(tmp_path / "model", model, tmp_path / "tok")
    result = _export(tmp_path / "model", tmp_path / "hf")
    assert result.exit_code == 2 and "clashes with a vocabulary token" in result.stderr
    assert not (tmp_path / "hf").exists()
