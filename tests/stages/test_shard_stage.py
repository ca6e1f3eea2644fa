"""The `shard` stage: run() and `gptpipe shard` through the real CLI, on real tokenizers."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import said
from helpers.mirror import MIRROR, needs_mirror
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.config import ShardConfig
from gptpipe.stages import shard as stage
from gptpipe.tokenizer.folder import load_tokenizer, save_gpt2, save_tokenizer, tokenizer_hash
from gptpipe.tokenizer.special import EOT
from gptpipe.tokens.shards import TokenWindows, load_split, read_manifest

runner = CliRunner()


def documents(n: int = 60) -> list[str]:
    return [
        f"Document {i}: " + " ".join(f"word{(i * j) % 97}" for j in range(40)) for i in range(n)
    ]


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "gpt2"
    save_gpt2(out)
    return out


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(f"\n{EOT}\n".join(documents()), encoding="utf-8")
    return path


def params(tmp_path: Path, **shard: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"shard": shard}), encoding="utf-8")
    return path


def invoke(*args: object):
    return runner.invoke(app, ["shard", *map(str, args)])


def test_cli_writes_split_shards_whose_chunks_are_the_encoded_stream(tmp_path, corpus, gpt2):
    out = tmp_path / "shards"
    p = params(tmp_path, split_chunk_tokens=128, val_fraction=0.2, shard_tokens=1024)
    details = tmp_path / "shard.json"
    args = ["--corpus", corpus, "--tokenizer", gpt2, "--out", out, "--details", details]
    result = invoke("--params", p, *args)
    assert result.exit_code == 0, result.output
    run = json.loads(details.read_text())  # run details beside the folder: the wall time
    assert run["documents"] == 60 and 0 < run["wall_seconds"] < 60
    assert result.stdout == ""  # summaries and progress go to stderr; stdout is for results
    enc = load_tokenizer(gpt2)
    stream = np.array([t for d in documents() for t in [*enc.encode_ordinary(d), 50256]])
    manifest = read_manifest(out)
    assert manifest["dtype"] == "uint16" and manifest["eot_id"] == 50256
    assert manifest["vocab_size"] == 50257 and manifest["documents"] == 60
    assert manifest["tokenizer_hash"] == tokenizer_hash(gpt2)
    assert manifest["tokens"] == len(stream)
    train, val = load_split(out, "train"), load_split(out, "val")
    assert len(train) + len(val) == len(stream)
    assert len(manifest["splits"]["train"]["files"]) > 1  # shard_tokens=1024 splits files
    assert all(s["tokens"] <= 1024 for s in manifest["splits"]["train"]["shards"])
    n_chunks = len(stream) // 128
    assert sum(manifest["split"]["chunks"].values()) == n_chunks
    # Each split is whole chunks of the stream at multiples of 128, in stream order.
    ends = {128 * (n_chunks - 1): len(stream)}
    for split in (train, val):
        i, last = 0, -1
        while i < len(split):
            start = next(
                p
                for p in range(last + 1, n_chunks)
                if np.array_equal(split[i : i + 16], stream[128 * p : 128 * p + 16])
            )
            begin = 128 * start
            end = ends.get(begin, begin + 128)
            assert np.array_equal(split[i : i + end - begin], stream[begin:end])
            i, last = i + end - begin, start
    listed = manifest["splits"]["train"]["files"] + manifest["splits"]["val"]["files"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*listed, "manifest.json"])


def test_cli_ends_with_one_line_saying_what_it_wrote(tmp_path, corpus, gpt2):
    out, details = tmp_path / "shards", tmp_path / "runs" / "shard.json"
    p = params(tmp_path, split_chunk_tokens=128, val_fraction=0.2)
    args = ["--params", p, "--corpus", corpus, "--tokenizer", gpt2, "--out", out]
    result = invoke(*args, "--details", details)
    assert result.exit_code == 0, result.output
    summary, written = said.wrote(result.stderr, "shard")
    assert written == said.paths(out, details)
    tokens = read_manifest(out)["tokens"]
    assert summary.startswith(f"60 documents, {tokens} tokens (train ")
    assert [line for line in said.lines(result.stderr) if line.startswith("shard:")] == [
        said.lines(result.stderr)[-1]
    ]  # one summary line, not one from the stage and another from the command
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert said.wrote(result.stderr, "shard")[1] == said.paths(out)


def test_reruns_are_byte_identical_and_seed_changes_the_split(tmp_path, corpus, gpt2):
    cfg = ShardConfig(split_chunk_tokens=64, val_fraction=0.25, shard_tokens=2048)
    stage.run(cfg, corpus, gpt2, tmp_path / "a", show_progress=False)
    stage.run(cfg, corpus, gpt2, tmp_path / "b", show_progress=False)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    cfg.seed = 99
    stage.run(cfg, corpus, gpt2, tmp_path / "c", show_progress=False)
    assert not np.array_equal(load_split(tmp_path / "a", "val"), load_split(tmp_path / "c", "val"))


def test_bpe_tokenizer_shards_feed_training_windows(tmp_path, corpus):
    from gptpipe.tokenizer.bpe import train_bpe
    from gptpipe.tokenizer.folder import PATTERNS

    result = train_bpe(documents(), 400, PATTERNS["gpt2"], show_progress=False)
    save_tokenizer(tmp_path / "tok", result.ranks, kind="bpe", pattern="gpt2")
    manifest = stage.run(
        ShardConfig(split_chunk_tokens=32), corpus, tmp_path / "tok", tmp_path / "s", False
    )
    assert manifest["eot_id"] == 399 and manifest["vocab_size"] == 400
    windows = TokenWindows(tmp_path / "s", "train", block_size=16)
    x, y = windows.get_batch(range(len(windows)))
    assert int(x.max()) <= 399 and (x[:, 1:] == y[:, :-1]).all()
    text = load_tokenizer(tmp_path / "tok").decode(load_split(tmp_path / "s", "train").tolist())
    assert text.count(EOT) >= 1 and "Document" in text


@needs_mirror
def test_tinyshakespeare_splits_with_gpt2_counts(tmp_path, gpt2):
    corpus = MIRROR / "tinyshakespeare.txt"
    manifest = stage.run(ShardConfig(), corpus, gpt2, tmp_path / "s", show_progress=False)
    assert manifest["documents"] == 1
    assert manifest["tokens"] == 338025 + 1  # GPT-2's published count, plus one <|endoftext|>
    val = manifest["splits"]["val"]["tokens"]
    assert (0.05 < val / manifest["tokens"] < 0.2 and val % 4096 == 0) or val > 4096
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["corpus_bytes"] == 1115394


def test_bad_inputs_exit_2_naming_file_and_leave_nothing(tmp_path, corpus, gpt2):
    out = tmp_path / "shards"
    p = params(tmp_path, split_chunk_tokens=4096)

    def check(corpus_path: Path, tokenizer: Path, expected: str) -> None:
        result = invoke(
            "--params", p, "--corpus", corpus_path, "--tokenizer", tokenizer, "--out", out
        )
        assert result.exit_code == 2, result.output
        assert expected in result.output and "Traceback" not in result.output
        assert not out.exists()
        assert not [q for q in tmp_path.iterdir() if q.name.startswith(".shards")]

    check(tmp_path / "nope.txt", gpt2, "nope.txt: corpus file not found")
    check(corpus, tmp_path / "notok", "notok/tokenizer.json: not found")
    empty = tmp_path / "empty.txt"
    empty.write_text(f"{EOT}\n{EOT}\n", encoding="utf-8")
    check(empty, gpt2, "empty.txt: corpus is empty")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"ok\n" * 5 + b"\xc3\x28 broken")
    check(binary, gpt2, "binary.txt: not UTF-8 text (invalid byte at offset 15)")
    check(corpus, gpt2, "corpus too small for a train/val split")
    check(corpus, gpt2, "shard.split_chunk_tokens=4096")
    bad = invoke(
        "--params",
        p,
        "-S",
        "shard.val_fraction=1.5",
        "--corpus",
        corpus,
        "--tokenizer",
        gpt2,
        "--out",
        out,
    )
    assert bad.exit_code == 2 and "shard.val_fraction" in bad.output


def test_shards_are_byte_identical_whatever_the_worker_count(tmp_path, gpt2, monkeypatch):
    import gptpipe.tokens.shard_writer as shards

    monkeypatch.setattr(shards, "BLOCK_BYTES", 4096)  # many pieces in flight
    corpus = tmp_path / "big.txt"
    corpus.write_text(f"\n{EOT}\n".join(documents(400)), encoding="utf-8")
    outs = []
    for workers in (1, 2, 3):
        cfg = ShardConfig(split_chunk_tokens=256, shard_tokens=4096, workers=workers)
        outs.append(tmp_path / f"w{workers}")
        stage.run(cfg, corpus, gpt2, outs[-1], show_progress=False)
    names = sorted(p.name for p in outs[0].iterdir())
    assert len(names) > 4
    for out in outs[1:]:
        assert sorted(p.name for p in out.iterdir()) == names
        for name in names:
            assert (out / name).read_bytes() == (outs[0] / name).read_bytes(), name
