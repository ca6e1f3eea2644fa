"""The `tokenizer` stage: run() and `gptpipe tokenizer` through the real CLI."""

import json
from pathlib import Path

import pytest
import yaml
from helpers import said
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.config import TokenizerConfig
from gptpipe.stages import tokenizer as stage
from gptpipe.tokenizer.folder import RANKS_FILE, load_tokenizer
from gptpipe.tokenizer.special import EOT

runner = CliRunner()
DOCS = [
    "The quick brown fox jumps over the lazy dog. " * 20,
    "Pack my box with five dozen liquor jugs! 12345 67890\n" * 20,
    "Ünïcödé ✨ emoji 😀 and tabs\tand   spaces\n" * 20,
]


def write_corpus(tmp_path: Path, docs: list[str] = DOCS) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(f"\n{EOT}\n".join(docs), encoding="utf-8")
    return corpus


def params(tmp_path: Path, **tokenizer: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"tokenizer": tokenizer}), encoding="utf-8")
    return path


def invoke(*args: str | Path):
    return runner.invoke(app, ["tokenizer", *map(str, args)])


def test_cli_trains_bpe_that_round_trips_the_corpus(tmp_path):
    corpus = write_corpus(tmp_path)
    out = tmp_path / "tok"
    details = tmp_path / "runs" / "tokenizer.json"
    p = params(tmp_path, vocab_size=300)
    result = invoke("--params", p, "--corpus", corpus, "--out", out, "--details", details)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # summaries and progress go to stderr; stdout is for results
    run = json.loads(details.read_text())  # run details beside the folder: the wall time
    assert run["kind"] == "bpe" and run["n_vocab"] == 300 and 0 < run["wall_seconds"] < 60
    enc = load_tokenizer(out)
    assert enc.n_vocab == 300 and enc.encode(EOT, allowed_special="all") == [299]
    for doc in DOCS:
        ids = enc.encode_ordinary(doc)
        assert enc.decode(ids) == doc and len(ids) < len(doc.encode("utf-8"))
    assert not any(b"endoftext" in token for token in enc._mergeable_ranks)


def test_cli_ends_with_one_line_saying_what_it_wrote(tmp_path):
    """The stage's one summary line, last on stderr; the details file only when given."""
    corpus = write_corpus(tmp_path)
    out, details = tmp_path / "tok", tmp_path / "runs" / "tokenizer.json"
    p = params(tmp_path, kind="byte")
    result = invoke("--params", p, "--corpus", corpus, "--out", out, "--details", details)
    assert result.exit_code == 0, result.output
    summary, written = said.wrote(result.stderr, "tokenizer")
    assert written == said.paths(out, details) and summary.startswith("byte, 257 ids")
    assert [line for line in said.lines(result.stderr) if line.startswith("tokenizer:")] == [
        said.lines(result.stderr)[-1]
    ]  # one summary line, not one from the stage and another from the command
    result = invoke("--params", p, "--corpus", corpus, "--out", out)
    assert result.exit_code == 0, result.output
    assert said.wrote(result.stderr, "tokenizer")[1] == said.paths(out)


def test_set_override_and_byte_identical_reruns(tmp_path):
    corpus = write_corpus(tmp_path)
    p = params(tmp_path, vocab_size=300)
    for name in ("a", "b"):
        args = ["--params", p, "-S", "tokenizer.pattern=gpt4", "-S", "tokenizer.vocab_size=280"]
        assert invoke(*args, "--corpus", corpus, "--out", tmp_path / name).exit_code == 0
    a, b = (tmp_path / n for n in ("a", "b"))
    assert (a / RANKS_FILE).read_bytes() == (b / RANKS_FILE).read_bytes()
    assert load_tokenizer(a).n_vocab == 280
    assert sorted(p.name for p in a.iterdir()) == ["tokenizer.json", "tokenizer.tiktoken"]


def test_gpt2_kind_needs_no_corpus(tmp_path):
    summary = stage.run(TokenizerConfig(kind="gpt2"), tmp_path / "absent.txt", tmp_path / "tok")
    assert summary["n_vocab"] == 50257 and summary["merges"] is None
    assert load_tokenizer(tmp_path / "tok").encode_ordinary("Hello world") == [15496, 995]


def test_vocab_too_large_exits_2_naming_key_and_maximum(tmp_path):
    corpus = write_corpus(tmp_path, ["abab abab"])
    out = tmp_path / "tok"
    result = invoke("--params", params(tmp_path, vocab_size=4096), "--corpus", corpus, "--out", out)
    assert result.exit_code == 2
    assert "tokenizer.vocab_size" in result.output and "maximum vocab_size" in result.output
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_corpora_exit_2_with_one_line_naming_the_file(tmp_path):
    p = params(tmp_path, vocab_size=300)
    missing = invoke("--params", p, "--corpus", tmp_path / "nope.txt", "--out", tmp_path / "t")
    assert missing.exit_code == 2 and "nope.txt: corpus file not found" in missing.output
    empty = tmp_path / "empty.txt"
    empty.write_text(f"\n{EOT}\n", encoding="utf-8")
    result = invoke("--params", p, "--corpus", empty, "--out", tmp_path / "t")
    assert result.exit_code == 2 and "empty.txt: corpus is empty" in result.output
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"fine text\n\x80\x81 not utf-8")
    result = invoke("--params", p, "--corpus", binary, "--out", tmp_path / "t")
    assert result.exit_code == 2 and "binary.txt: not UTF-8 text" in result.output
    assert "offset 10" in result.output
    assert not (tmp_path / "t").exists()


def test_special_tokens_from_params_and_from_set_get_ids_after_eot(tmp_path):
    corpus = write_corpus(tmp_path)
    extra = ["<|im_start|>", "<|im_end|>", "<|pad|>"]
    p = params(tmp_path, vocab_size=300, special_tokens=extra)
    assert invoke("--params", p, "--corpus", corpus, "--out", tmp_path / "a").exit_code == 0
    override = "tokenizer.special_tokens=[<|im_start|>, <|im_end|>, <|pad|>]"
    args = ["--params", params(tmp_path, vocab_size=300), "-S", override]
    result = invoke(*args, "--corpus", corpus, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    a, b = (tmp_path / n for n in ("a", "b"))
    for name in (RANKS_FILE, "tokenizer.json"):  # deterministic, whichever way it was set
        assert (a / name).read_bytes() == (b / name).read_bytes()
    enc = load_tokenizer(a)
    assert enc.n_vocab == 300 and len(enc._mergeable_ranks) == 296
    text = "<|im_start|>The quick brown fox<|im_end|><|pad|>" + EOT
    ids = enc.encode(text, allowed_special="all")
    assert ids[0] == 297 and ids[-3:] == [298, 299, 296] and enc.decode(ids) == text
    summary = stage.run(
        TokenizerConfig(vocab_size=300, special_tokens=extra), corpus, tmp_path / "c", False
    )
    assert summary["merges"] == 300 - 257 - 3
    assert summary["special_tokens"] == {EOT: 296, **{t: 297 + i for i, t in enumerate(extra)}}


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("value", "key", "message"),
    [
        ('[""]', "tokenizer.special_tokens[0]", "empty"),
        ('["  "]', "tokenizer.special_tokens[0]", "only whitespace"),
        ("[<|a|>, <|b|>, <|a|>]", "tokenizer.special_tokens[2]", "listed twice"),
        ("[<|endoftext|>]", "tokenizer.special_tokens[0]", "always the first special token"),
        ("[<|a|>, <|a|>x]", "tokenizer.special_tokens[1]", "prefix"),
        ("[<|end]", "tokenizer.special_tokens[0]", "prefix"),
        ("[x]", "tokenizer.special_tokens[0]", "one byte"),
        ("<|pad|>", "tokenizer.special_tokens", "expected a list"),
        ("[[PAD]]", "tokenizer.special_tokens[0]", "expected a string"),
    ],
)
def test_bad_special_tokens_exit_2_with_one_line_naming_the_key(tmp_path, value, key, message):
    corpus = write_corpus(tmp_path)
    p = params(tmp_path, vocab_size=300)
    args = ["--params", p, "-S", f"tokenizer.special_tokens={value}"]
    line = one_error_line(invoke(*args, "--corpus", corpus, "--out", tmp_path / "tok"))
    assert f"'{key}'" in line and message in line
    assert not (tmp_path / "tok").exists()


def test_special_tokens_need_room_in_the_vocabulary_and_kind_bpe(tmp_path):
    corpus = write_corpus(tmp_path)
    p = params(tmp_path, vocab_size=258, special_tokens=["<|a|>", "<|b|>"])
    line = one_error_line(invoke("--params", p, "--corpus", corpus, "--out", tmp_path / "t"))
    assert "'tokenizer.vocab_size'" in line and "must be in 259..1000000" in line
    p = params(tmp_path, kind="gpt2", special_tokens=["<|pad|>"])
    line = one_error_line(invoke("--params", p, "--out", tmp_path / "t"))
    assert "'tokenizer.special_tokens'" in line and "tokenizer.kind: gpt2" in line
    assert "50257" in line and not (tmp_path / "t").exists()


def test_special_token_learned_as_a_merge_exits_2_naming_the_key(tmp_path):
    corpus = write_corpus(tmp_path, ["abab abab abab"] * 3)
    p = params(tmp_path, vocab_size=260, special_tokens=["<|pad|>", "ab"])
    result = invoke("--params", p, "--corpus", corpus, "--out", tmp_path / "t")
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("gptpipe:")]
    assert "'tokenizer.special_tokens[1]'" in line and "also a token of the vocabulary" in line
    assert not (tmp_path / "t").exists()
