"""tokenizer.kind byte, char and word: round trips (or their stated loss), the pipeline's
interface (sharding, evaluation's byte count, generation), and the Hugging Face export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.config import ShardConfig, TokenizerConfig
from gptpipe.errors import ConfigError
from gptpipe.evaluation import scored_bytes
from gptpipe.model.folder import save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.stages import shard as shard_stage
from gptpipe.stages import tokenizer as stage
from gptpipe.tokenizer.folder import META_FILE, load_tokenizer
from gptpipe.tokenizer.special import EOT
from gptpipe.tokenizer.vocab import (
    UNK,
    CharEncoding,
    WordEncoding,
    word_pieces,
    word_round_trip,
)
from gptpipe.tokens.shard_writer import encode_corpus
from gptpipe.tokens.shards import load_split, read_manifest

runner = CliRunner()
DOCS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.",
    "Ünïcödé ✨ emoji 😀 and\ttabs   and spaces; Speak again!\r\nThe end.",
]
OTHER = "A line the corpus never saw: ¿qué? 42 Zebras — and SPEAK."


def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(f"\n{EOT}\n".join(DOCS), encoding="utf-8")
    return path


def tokenizer(tmp_path: Path, kind: str, vocab_size: int = 4096) -> Path:
    out = tmp_path / f"tok-{kind}"
    stage.run(TokenizerConfig(kind=kind, vocab_size=vocab_size), corpus(tmp_path), out, False)  # type: ignore[arg-type]
    return out


def test_byte_kind_is_lossless_and_needs_no_corpus(tmp_path):
    summary = stage.run(TokenizerConfig(kind="byte"), tmp_path / "absent.txt", tmp_path / "b")
    enc = load_tokenizer(tmp_path / "b")
    assert summary["n_vocab"] == enc.n_vocab == 257 and enc.eot_token == 256
    for text in [*DOCS, OTHER]:
        ids = enc.encode_ordinary(text)
        assert ids == list(text.encode("utf-8")) and enc.decode(ids) == text


def test_char_kind_round_trips_corpus_text_and_marks_unknown_characters(tmp_path):
    enc = load_tokenizer(tokenizer(tmp_path, "char"))
    assert isinstance(enc, CharEncoding)
    chars = sorted(set("".join(DOCS)))
    assert enc.n_vocab == len(chars) + 2  # + <|endoftext|> + <|unk|>
    assert enc.eot_token == len(chars) and enc.special_tokens_set == {EOT}
    assert [enc.decode([i]) for i in range(len(chars))] == chars  # code point order
    for text in DOCS:
        ids = enc.encode_ordinary(text)
        assert len(ids) == len(text) and enc.decode(ids) == text
    # The stated loss: a character the corpus never had decodes as U+FFFD.
    unknown = {c for c in OTHER if c not in chars}
    expected = "".join("\ufffd" if c in unknown else c for c in OTHER)
    assert unknown and enc.decode(enc.encode_ordinary(OTHER)) == expected
    # tiktoken's special-token rules.
    assert enc.encode(f"a{EOT}", allowed_special="all")[-1] == enc.eot_token
    with pytest.raises(ValueError, match="disallowed special token"):
        enc.encode(f"a{EOT}")
    plain = enc.encode_to_numpy(EOT, allowed_special=set(), disallowed_special=())
    assert enc.eot_token not in plain.tolist()


def test_word_kind_lowercases_caps_the_vocabulary_and_states_its_loss(tmp_path):
    enc = load_tokenizer(tokenizer(tmp_path, "word", vocab_size=12))
    assert isinstance(enc, WordEncoding)
    assert enc.n_vocab == 12 and enc.eot_token == 10 and enc.encode_single_token(EOT) == 10
    assert enc.unk_id == 11 and enc.decode([11]) == " " + UNK
    # Most frequent first: "speak" (x4), then "," and ":" and "." (ties in string order).
    assert enc.tokens[0] == "speak" and len(enc.tokens) == 10
    for text in [*DOCS, OTHER]:
        ids = enc.encode_ordinary(text)
        assert enc.decode(ids) == word_round_trip(enc, text)
        assert len(ids) == len(word_pieces(text))
    assert enc.decode(enc.encode_ordinary("SPEAK, Speak?")) == f" speak , speak {UNK}"
    # Decoding is additive, so a continuation appends to its prompt.
    ids = enc.encode_ordinary(DOCS[0])
    assert enc.decode(ids[:5]) + enc.decode(ids[5:]) == enc.decode(ids)
    # A large enough vocabulary loses only case and whitespace.
    full = load_tokenizer(tokenizer(tmp_path, "word", vocab_size=1000))
    assert full.decode(full.encode_ordinary(DOCS[1])) == "".join(
        " " + p for p in word_pieces(DOCS[1])
    )
    meta = json.loads((tmp_path / "tok-word" / META_FILE).read_text())
    total = sum(len(d.encode()) for d in DOCS) / sum(len(word_pieces(d)) for d in DOCS)
    assert meta["kind"] == "word" and meta["bytes_per_token"] == pytest.approx(total)


def test_vocab_size_rules_per_kind():
    assert TokenizerConfig(kind="word", vocab_size=3).vocab_size == 3
    with pytest.raises(ConfigError, match=r"tokenizer\.vocab_size"):
        TokenizerConfig(kind="word", vocab_size=2)
    with pytest.raises(ConfigError, match=r"tokenizer\.special_tokens"):
        TokenizerConfig(kind="char", special_tokens=["<|pad|>"])


def test_cli_unknown_kind_exits_2_naming_the_key(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"tokenizer": {"kind": "chars"}}))
    result = runner.invoke(app, ["tokenizer", "--params", str(params), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "tokenizer.kind" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["byte", "char", "word"])
def test_shards_and_bits_per_byte_count_the_source_text(tmp_path, kind):
    """Sharding ends each document with <|endoftext|>; the byte count of the scored tokens is
    the text's (exactly for byte and char, by the corpus average for word)."""
    tok = tokenizer(tmp_path, kind)
    out = tmp_path / "shards"
    cfg = ShardConfig(val_fraction=0.5, split_chunk_tokens=16, workers=2)
    shard_stage.run(cfg, corpus(tmp_path), tok, out, show_progress=False)
    enc = load_tokenizer(tok)
    manifest = read_manifest(out)
    assert manifest["eot_id"] == enc.eot_token and manifest["vocab_size"] == enc.n_vocab
    split = np.concatenate([load_split(out, "train"), load_split(out, "val")])
    # the stream in order, in small pieces over two threads
    stream = encode_corpus(corpus(tmp_path), tok, "uint16", workers=2, block_bytes=16)
    ids = np.concatenate(list(stream))
    assert sorted(split.tolist()) == sorted(ids.tolist())
    expected = []
    for doc in DOCS:
        expected += [*enc.encode_ordinary(doc), enc.eot_token]
    assert ids.tolist() == expected
    text_bytes = sum(len(d.encode("utf-8")) for d in DOCS)
    first = len(enc.decode_bytes(ids[:1].tolist())) if kind != "word" else 0
    counted = scored_bytes(enc, ids)
    if kind == "word":
        # the first token is not scored: one token's worth short of the whole corpus
        assert counted == pytest.approx(text_bytes - enc.bytes_per_token, abs=1)  # type: ignore[attr-defined]
    else:
        assert counted == text_bytes - first


@pytest.mark.parametrize("kind", ["char", "word"])
def test_evaluate_text_and_generate_work_and_export_refuses_in_one_line(tmp_path, kind):
    tok = tokenizer(tmp_path, kind)
    enc = load_tokenizer(tok)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=enc.n_vocab, block_size=16, n_layer=1, n_head=2, n_embd=16))
    save_model(tmp_path / "model", model, tok)
    text = tmp_path / "t.txt"
    text.write_text(DOCS[0], encoding="utf-8")
    result = runner.invoke(
        app, ["evaluate", "--model", str(tmp_path / "model"), "--text", str(text), "--stride", "8"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    first = 1 if kind == "char" else len("First")
    assert metrics["bytes"] == len(DOCS[0].encode("utf-8")) - first
    assert np.isfinite(metrics["bits_per_byte"])
    args = ["generate", "--model", str(tmp_path / "model"), "--prompt", "Speak"]
    result = runner.invoke(app, [*args, "--max-new-tokens", "5", "--temperature", "0"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["export", "--format", "hf", str(tmp_path / "model"), str(tmp_path / "hf")]
    )
    assert result.exit_code == 2 and not (tmp_path / "hf").exists()
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and f"tokenizer.kind {kind}" in line


def test_byte_kind_exports_a_tokenizer_transformers_encodes_identically(tmp_path):
    transformers = pytest.importorskip("transformers")
    stage.run(TokenizerConfig(kind="byte"), tmp_path / "absent.txt", tmp_path / "b", False)
    enc = load_tokenizer(tmp_path / "b")
    model = GPT(GPTConfig(vocab_size=257, block_size=16, n_layer=1, n_head=2, n_embd=16))
    save_model(tmp_path / "model", model, tmp_path / "b")
    result = runner.invoke(
        app, ["export", "--format", "hf", str(tmp_path / "model"), str(tmp_path / "hf")]
    )
    assert result.exit_code == 0, result.output
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in [*DOCS, OTHER]:
        assert hf.encode(text) == enc.encode_ordinary(text)
        assert hf.decode(hf.encode(text)) == text
