"""tokenizer.kind gpt2 with min_count >= 1: GPT-2's tokens a corpus uses, which spell the rest."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.config import ShardConfig, TokenizerConfig
from gptpipe.errors import BadInput, ConfigError
from gptpipe.evaluation import scored_bytes
from gptpipe.model.folder import save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.stages import shard as shard_stage
from gptpipe.stages import tokenizer as stage
from gptpipe.tokenizer.folder import (
    RANKS_FILE,
    gpt2_encoding,
    load_tokenizer,
    ranks_to_text,
    read_ranks,
)
from gptpipe.tokenizer.special import EOT
from gptpipe.tokenizer.subset import GPT2SubsetEncoding, fewest_pieces
from gptpipe.tokens.shards import load_split
from tests.helpers.mirror import MIRROR, needs_mirror

runner = CliRunner()
DOCS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.",
    "Second Citizen:\nSpeak, speak! We proceed, we speak further. Ünïcödé ✨ 😀 speak.",
]
OTHER = "A line the corpus never saw: ¿qué? 42 Zebras — and SPEAK.\r\n\tthe end"


def subset(tmp_path: Path, min_count: int = 2) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(f"\n{EOT}\n".join(DOCS), encoding="utf-8")
    out = tmp_path / f"tok-{min_count}"
    stage.run(TokenizerConfig(kind="gpt2", min_count=min_count), corpus, out, False)
    return out


def test_keeps_the_tokens_the_corpus_has_min_count_times_and_spells_the_rest_with_them(tmp_path):
    enc = load_tokenizer(subset(tmp_path))
    gpt2 = gpt2_encoding()
    counts = collections.Counter(t for d in DOCS for t in gpt2.encode_ordinary(d))
    kept = sorted(t for t, n in counts.items() if n >= 2 and len(gpt2.decode_bytes([t])) > 1)
    assert isinstance(enc, GPT2SubsetEncoding) and enc.kept == kept
    assert enc.n_vocab == 256 + len(kept) + 1 and enc.eot_token == enc.n_vocab - 1
    assert [enc.decode_bytes([b]) for b in range(256)] == [bytes([b]) for b in range(256)]
    ours = {gpt2_id: 256 + n for n, gpt2_id in enumerate(kept)}
    for text in [*DOCS, OTHER]:
        ids = enc.encode_ordinary(text)
        assert enc.decode(ids) == text  # lossless, unseen text too
        at = 0
        for t in gpt2.encode_ordinary(text):  # GPT-2's tokens, each kept or spelled
            width = 1 if t in ours else len(enc.spelling(t))
            assert ids[at : at + width] == ([ours[t]] if t in ours else enc.spelling(t))
            assert enc.decode_bytes(ids[at : at + width]) == gpt2.decode_bytes([t])
            at += width
        assert at == len(ids)
    piece = {gpt2.decode([t]): 256 + n for n, t in enumerate(kept)}
    assert " speak" in piece  # a frequent token stays one id
    # a token the corpus lacks: the fewest kept tokens (then bytes) that spell it
    assert enc.encode_ordinary(" speaks") == [piece[" speak"], ord("s")]
    assert enc.encode_ordinary(" speaking") == [piece[" speak"], *b"ing"]
    assert enc.encode(f"a{EOT}b", allowed_special="all") == [97, enc.eot_token, 98]
    with pytest.raises(ValueError, match="disallowed special token"):
        enc.encode(f"a{EOT}")
    assert enc.encode_ordinary("") == []


def test_min_count_one_keeps_every_token_the_corpus_has(tmp_path):
    enc = load_tokenizer(subset(tmp_path, min_count=1))
    for doc in DOCS:  # the corpus itself needs no byte spelling
        assert len(enc.encode_ordinary(doc)) == len(gpt2_encoding().encode_ordinary(doc))


def test_min_count_rules():
    assert TokenizerConfig(kind="gpt2", min_count=3).min_count == 3
    with pytest.raises(ConfigError, match=r"tokenizer\.min_count"):
        TokenizerConfig(kind="gpt2", min_count=-1)
    with pytest.raises(ConfigError, match=r"tokenizer\.min_count.*kind: bpe"):
        TokenizerConfig(kind="bpe", min_count=2)


def test_shards_and_bits_per_byte_count_the_source_text_exactly(tmp_path):
    tok = subset(tmp_path)
    corpus = tmp_path / "corpus.txt"
    shard_stage.run(
        ShardConfig(val_fraction=0.5, split_chunk_tokens=16), corpus, tok, tmp_path / "s", False
    )
    enc = load_tokenizer(tok)
    ids = np.concatenate([load_split(tmp_path / "s", "train"), load_split(tmp_path / "s", "val")])
    expected = [t for d in DOCS for t in [*enc.encode_ordinary(d), enc.eot_token]]
    assert sorted(ids.tolist()) == sorted(expected)
    stream = np.array(expected)
    first = len(enc.decode_bytes(stream[:1].tolist()))
    assert scored_bytes(enc, stream) == sum(len(d.encode("utf-8")) for d in DOCS) - first


def test_a_model_generates_evaluates_and_refuses_export_in_one_line(tmp_path):
    tok = subset(tmp_path)
    enc = load_tokenizer(tok)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=enc.n_vocab, block_size=16, n_layer=1, n_head=2, n_embd=16))
    save_model(tmp_path / "model", model, tok)
    text = tmp_path / "t.txt"
    plain = OTHER.replace("\r", "")  # the evaluate stage reads text with universal newlines
    text.write_text(plain, encoding="utf-8")
    result = runner.invoke(
        app, ["evaluate", "--model", str(tmp_path / "model"), "--text", str(text), "--stride", "8"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bytes"] == len(plain.encode("utf-8")) - 1
    args = ["generate", "--model", str(tmp_path / "model"), "--prompt", "Speak"]
    result = runner.invoke(app, [*args, "--max-new-tokens", "8", "--temperature", "0"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["export", "--format", "hf", str(tmp_path / "model"), str(tmp_path / "hf")]
    )
    assert result.exit_code == 2 and not (tmp_path / "hf").exists()
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "min_count" in line


def test_a_folder_whose_tokens_are_not_gpt2s_is_bad_input_naming_it(tmp_path):
    tok = subset(tmp_path)
    ranks = read_ranks(tok / RANKS_FILE)
    last = max(ranks, key=ranks.__getitem__)
    ranks[b"zzqqxx-not-gpt2"] = ranks.pop(last)
    (tok / RANKS_FILE).write_text(ranks_to_text(ranks), encoding="ascii")
    with pytest.raises(BadInput, match=r"tok-2.*not a GPT-2 token"):
        load_tokenizer(tok)


def test_cli_min_count_on_another_kind_exits_2_naming_the_key(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"tokenizer": {"kind": "byte", "min_count": 2}}))
    result = runner.invoke(app, ["tokenizer", "--params", str(params), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "tokenizer.min_count" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@needs_mirror
def test_tiny_shakespeare_keeps_a_sixth_of_gpt2_and_round_trips(tmp_path):
    corpus = MIRROR / "tinyshakespeare.txt"
    stage.run(TokenizerConfig(kind="gpt2", min_count=2), corpus, tmp_path / "t", False)
    enc = load_tokenizer(tmp_path / "t")
    assert 7_000 < enc.n_vocab < 9_000  # of GPT-2's 50,257
    text = corpus.read_text(encoding="utf-8")
    ids = enc.encode_ordinary(text)
    assert enc.decode(ids) == text
    # a few percent longer than GPT-2's own: only the rare tokens are spelled in bytes
    assert 1.0 < len(ids) / len(gpt2_encoding().encode_ordinary(text)) < 1.1


def test_fewest_pieces_finds_the_shortest_spelling_not_the_greedy_one():
    ours = {bytes([b]): b for b in range(256)} | {b"ab": 300, b"bcd": 301, b"abcd!": 302}
    assert fewest_pieces(b"abcd", ours, 5) == [ord("a"), 301]  # greedy "ab" would take three
    assert fewest_pieces(b"abcd!", ours, 5) == [302]
    assert fewest_pieces(b"xab", ours, 5) == [ord("x"), 300]
