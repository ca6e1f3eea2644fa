"""Bad data: corpora (missing, empty, binary, not UTF-8, a folder, too short for one window,
a vocabulary the corpus cannot fill) and shards (truncated, bit-flipped, a lying manifest,
ids past the vocabulary, a tokenizer that does not match). Nothing half-written after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.faults import cli, expect_bad_input, leftovers, raises_bad_input
from helpers.tiny import write_params

from gptpipe.tokens.shards import TokenWindows, read_manifest

CORPORA = [
    ("missing", None, ["corpus.txt", "not found"]),
    ("empty", b"", ["corpus.txt", "empty"]),
    ("only-separators", b"<|endoftext|>\n<|endoftext|>\n", ["corpus.txt", "empty"]),
    ("binary", bytes(range(256)) * 64, ["corpus.txt", "UTF-8", "offset 128"]),
    ("latin-1", "caf\u00e9 au lait\n".encode("latin-1"), ["corpus.txt", "UTF-8", "offset 3"]),
]


@pytest.mark.parametrize("stage", ["tokenizer", "shard"])
@pytest.mark.parametrize(
    ("data", "fragments"), [c[1:] for c in CORPORA], ids=[c[0] for c in CORPORA]
)
def test_bad_corpus(pipeline, tmp_path, stage, data, fragments):
    corpus = tmp_path / "corpus.txt"
    if data is not None:
        corpus.write_bytes(data)
    out = tmp_path / "out"
    args = [stage, "--params", "params.yaml", "--corpus", corpus, "--out", out]
    if stage == "shard":
        args += ["--tokenizer", pipeline["tokenizer"]]
        if data == b"<|endoftext|>\n<|endoftext|>\n":
            fragments = ["corpus.txt"]
    expect_bad_input(cli(args, tmp_path), *fragments)
    assert not out.exists() and leftovers(tmp_path) == []


def test_corpus_path_is_a_folder(tmp_path):
    result = cli(
        ["tokenizer", "--params", "params.yaml", "--corpus", tmp_path, "--out", "t"], tmp_path
    )
    expect_bad_input(result, str(tmp_path))


@pytest.mark.parametrize("vocab, fragment", [(5000, "maximum vocab_size"), (256, "must be in")])
def test_vocabulary_the_corpus_cannot_fill_or_too_small(tmp_path, vocab, fragment):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello world hello\n")
    (tmp_path / "params.yaml").write_text(f"tokenizer:\n  vocab_size: {vocab}\n")
    result = cli(["tokenizer", "--corpus", corpus, "--out", tmp_path / "tok"], tmp_path)
    expect_bad_input(result, "tokenizer.vocab_size", fragment)
    assert not (tmp_path / "tok").exists()


def test_corpus_shorter_than_a_context_window(pipeline, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a cat. " * 300)
    shards = tmp_path / "shards"
    (tmp_path / "params.yaml").write_text(
        "shard:\n  shard_tokens: 1024\n  split_chunk_tokens: 16\n"
    )
    assert (
        cli(
            ["shard", "--corpus", corpus, "--tokenizer", pipeline["tokenizer"], "--out", shards],
            tmp_path,
        ).exit_code
        == 0
    )
    write_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text(
        (tmp_path / "params.yaml").read_text().replace("block_size: 32", "block_size: 4096")
    )
    result = cli(["pretrain", "--shards", shards, "--tokenizer", pipeline["tokenizer"]], tmp_path)
    expect_bad_input(result, "shards", "fewer than one window")
    assert not (tmp_path / "models").exists() and not (tmp_path / "reports").exists()


# --------------------------------------------------------------------------- shards


def _first_shard(shards: Path) -> Path:
    return shards / read_manifest(shards)["splits"]["train"]["files"][0]


def _edit_manifest(shards: Path, change) -> None:
    path = shards / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _truncate(shards: Path) -> None:
    path = _first_shard(shards)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(shards: Path) -> None:
    path = _first_shard(shards)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _drop_checksums(manifest: dict) -> None:
    for split in manifest["splits"].values():
        for entry in split["shards"]:
            entry.pop("sha256", None)


def _truncate_unchecked(shards: Path) -> None:
    _edit_manifest(shards, _drop_checksums)
    _truncate(shards)


def _lie_about_count(manifest: dict) -> None:
    manifest["splits"]["train"]["shards"][0]["tokens"] += 7
    manifest["splits"]["train"]["tokens"] += 7


def _lie_about_dtype(manifest: dict) -> None:
    manifest["dtype"] = "uint32"


def _under_report_vocab(manifest: dict) -> None:
    manifest["vocab_size"] = 100
    manifest["eot_id"] = 99


def _sum_differs(manifest: dict) -> None:
    manifest["splits"]["train"]["tokens"] += 1


def _eot_outside(manifest: dict) -> None:
    manifest["eot_id"] = manifest["vocab_size"]


def _files_differ(manifest: dict) -> None:
    manifest["splits"]["train"]["files"] = ["other.arrow"]


SHARD_FAULTS = [
    ("truncated", _truncate, ["train-00000.arrow", "corrupt"]),
    ("bit-flipped", _flip, ["train-00000.arrow", "corrupt"]),
    ("truncated-no-checksum", _truncate_unchecked, ["train-00000.arrow", "not a readable Arrow"]),
    (
        "manifest-lies-count",
        lambda s: _edit_manifest(s, _lie_about_count),
        ["train-00000.arrow", "manifest says"],
    ),
    (
        "manifest-lies-dtype",
        lambda s: _edit_manifest(s, _lie_about_dtype),
        ["train-00000.arrow", "uint32"],
    ),
    (
        "manifest-under-reports-vocab",
        lambda s: _edit_manifest(s, _under_report_vocab),
        ["outside the vocabulary of 100"],
    ),
    ("manifest-sum-differs", lambda s: _edit_manifest(s, _sum_differs), ["manifest.json", "sum"]),
    (
        "manifest-eot-outside",
        lambda s: _edit_manifest(s, _eot_outside),
        ["manifest.json", "eot_id"],
    ),
    (
        "manifest-files-differ",
        lambda s: _edit_manifest(s, _files_differ),
        ["manifest.json", "files"],
    ),
    (
        "manifest-not-json",
        lambda s: (s / "manifest.json").write_text("{oops"),
        ["manifest.json", "JSON"],
    ),
    ("manifest-missing", lambda s: (s / "manifest.json").unlink(), ["manifest.json", "not found"]),
    ("shard-missing", lambda s: _first_shard(s).unlink(), ["train-00000.arrow", "not found"]),
]


@pytest.mark.parametrize(
    ("damage", "fragments"), [f[1:] for f in SHARD_FAULTS], ids=[f[0] for f in SHARD_FAULTS]
)
def test_damaged_shards_are_refused_when_opened(broken, damage, fragments):
    damage(broken["shards"])
    raises_bad_input(lambda: TokenWindows(broken["shards"], "train", 16), *fragments)


def test_pretrain_refuses_damaged_shards_and_writes_nothing(broken):
    _flip(broken["shards"])
    write_params(broken["root"] / "params.yaml")
    args = ["pretrain", "--shards", broken["shards"], "--tokenizer", broken["tokenizer"]]
    expect_bad_input(cli(args, broken["root"]), "train-00000.arrow", "corrupt")
    assert not (broken["root"] / "models").exists() and not (broken["root"] / "reports").exists()


def test_tokenizer_that_does_not_match_the_shards(broken):
    from gptpipe.tokenizer.folder import save_tokenizer

    other = broken["root"] / "other-tokenizer"
    save_tokenizer(other, {bytes([i]): 255 - i for i in range(256)}, kind="bpe", pattern="gpt2")
    write_params(broken["root"] / "params.yaml")
    result = cli(["pretrain", "--shards", broken["shards"], "--tokenizer", other], broken["root"])
    expect_bad_input(result, "manifest.json", "tokenizer_hash")
