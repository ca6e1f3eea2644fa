"""`tokenizer.sample_bytes`: the tokenizer stage learns from a bounded sample of a large corpus,
the same one every time, and from the whole of a small one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from helpers import tiny
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.tokenizer.folder import RANKS_FILE
from gptpipe.tokenizer.special import EOT
from gptpipe.tokens.sample import sample_texts

runner = CliRunner()
SEPARATOR = f"\n{EOT}\n"


def big_corpus(path: Path, docs: int = 3000) -> Path:
    """Documents whose vocabulary drifts through the file: a sample of its start alone would
    learn other merges than one spread over all of it."""
    rng = np.random.default_rng(0)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    stocks = [
        ["".join(rng.choice(letters, int(rng.integers(4, 10)))) for _ in range(200)]
        for _ in range(6)
    ]
    out = []
    for i in range(docs):
        era = i * 6 // docs  # six parts of the file, six different word stocks
        words = stocks[era]
        out.append(" ".join(rng.choice(words, int(rng.integers(50, 300)))) + ".")
    path.write_text(SEPARATOR.join(out) + "\n", encoding="utf-8")
    return path


def invoke(tmp_path: Path, corpus: Path, out: Path, **tokenizer: object) -> dict:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"tokenizer": {"vocab_size": 400, **tokenizer}}))
    details = out.with_suffix(".json")
    args = ["tokenizer", "--params", params, "--corpus", corpus, "--out", out]
    result = runner.invoke(app, [*map(str, args), "--details", str(details)])
    assert result.exit_code == 0, result.output
    return json.loads(details.read_text())


def test_a_large_corpus_trains_on_its_sample_the_same_every_time(tmp_path):
    corpus = big_corpus(tmp_path / "corpus.txt")
    size = corpus.stat().st_size
    sample_bytes = size // 10
    first = invoke(tmp_path, corpus, tmp_path / "a", sample_bytes=sample_bytes)
    again = invoke(tmp_path, corpus, tmp_path / "b", sample_bytes=sample_bytes)
    ranks = (tmp_path / "a" / RANKS_FILE).read_bytes()
    assert (tmp_path / "b" / RANKS_FILE).read_bytes() == ranks
    sample = first["sample"]
    assert sample == again["sample"] and sample["corpus_bytes"] == size
    assert 0.9 * sample_bytes < sample["sampled_bytes"] <= sample_bytes and sample["windows"] > 1
    # what it learned from is exactly the sample: the same tokenizer as one trained on the
    # sampled documents written out as a corpus of their own
    alone = tmp_path / "sample.txt"
    alone.write_text(SEPARATOR.join(sample_texts(corpus, sample_bytes)), encoding="utf-8")
    invoke(tmp_path, alone, tmp_path / "alone", sample_bytes=0)
    assert (tmp_path / "alone" / RANKS_FILE).read_bytes() == ranks
    # and it is not the whole corpus's, nor its first tenth's
    whole = invoke(tmp_path, corpus, tmp_path / "whole", sample_bytes=0)
    assert whole["sample"] == {"corpus_bytes": size, "sampled_bytes": size, "windows": 0}
    head = tmp_path / "head.txt"
    head.write_text(corpus.read_text(encoding="utf-8")[: sample_bytes - 1000], encoding="utf-8")
    invoke(tmp_path, head, tmp_path / "head", sample_bytes=0)
    for other in ("whole", "head"):
        assert (tmp_path / other / RANKS_FILE).read_bytes() != ranks


def test_a_corpus_within_the_sample_trains_as_on_the_whole_corpus(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(tiny.corpus_text(), encoding="utf-8")
    size = corpus.stat().st_size
    default = invoke(tmp_path, corpus, tmp_path / "default", vocab_size=300)  # 100 MB sample
    assert default["sample"] == {"corpus_bytes": size, "sampled_bytes": size, "windows": 0}
    for sample_bytes in (0, size):
        out = tmp_path / f"s{sample_bytes}"
        invoke(tmp_path, corpus, out, vocab_size=300, sample_bytes=sample_bytes)
        ranks = (tmp_path / f"s{sample_bytes}" / RANKS_FILE).read_bytes()
        assert ranks == (tmp_path / "default" / RANKS_FILE).read_bytes()


def test_a_negative_sample_size_exits_2_naming_the_key(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(tiny.corpus_text(), encoding="utf-8")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"tokenizer": {"vocab_size": 400}}))
    args = ["tokenizer", "--params", str(params), "--corpus", str(corpus)]
    args += ["--out", str(tmp_path / "tok")]
    result = runner.invoke(app, [*args, "-S", "tokenizer.sample_bytes=-1"])
    assert result.exit_code == 2
    assert "tokenizer.sample_bytes" in result.output and "must be >= 0" in result.output
    assert not (tmp_path / "tok").exists()


def test_a_sample_too_small_to_hold_text_exits_2_naming_the_key(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("é" * 1000, encoding="utf-8")  # two bytes a character
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"tokenizer": {"vocab_size": 300, "sample_bytes": 1}}))
    out = tmp_path / "tok"
    args = ["tokenizer", "--params", str(params), "--corpus", str(corpus), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "params key 'tokenizer.sample_bytes': 1 bytes of" in result.output
    assert "corpus.txt hold no text" in result.output and not out.exists()
