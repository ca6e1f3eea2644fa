"""The evaluate stage: val-split metrics per model, `--text` mode, and bad input."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import said
from helpers.http import serve_folder
from helpers.mirror import MIRROR, needs_mirror
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.config import EvaluateConfig
from gptpipe.errors import BadInput
from gptpipe.evaluation import perplexity
from gptpipe.model.folder import load_model, save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.stages import evaluate as evaluate_stage
from gptpipe.tokenizer.folder import (
    eot_id,
    load_tokenizer,
    save_gpt2,
    save_tokenizer,
    tokenizer_hash,
)
from gptpipe.tokens.shard_writer import ShardWriter, new_manifest, write_manifest

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n"
) * 4
runner = CliRunner()


def make_model(out: Path, tokenizer: Path, seed: int, vocab: int = 50257) -> None:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=32, n_layer=2, n_head=2, n_embd=32))
    save_model(out, model, tokenizer, meta={"stage": "test"})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    tok = root / "tokenizer"
    save_gpt2(tok)
    enc = load_tokenizer(tok)
    make_model(root / "base", tok, 1)
    make_model(root / "instruct", tok, 2)
    shards = root / "shards"
    shards.mkdir()
    ids = np.array([*enc.encode_ordinary(TEXT), eot_id(enc), *enc.encode_ordinary(TEXT[:90])])
    splits = {}
    for split, data in (("train", ids[:50]), ("val", ids)):
        writer = ShardWriter(shards, split, "uint32", shard_tokens=60)  # val spans 3+ files
        writer.append(data)
        splits[split] = writer.close()
    manifest = new_manifest(
        dtype="uint32",
        eot_id=eot_id(enc),
        vocab_size=enc.n_vocab,
        tokenizer_hash=tokenizer_hash(tok),
    )
    write_manifest(shards, {**manifest, "splits": splits})
    return {"root": root, "tok": tok, "shards": shards, "ids": ids}


def test_stage_writes_metrics_per_model_equal_to_direct_computation(
    world: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "metrics" / "evaluate.json"
    cfg = EvaluateConfig(stride=8, batch_size=3, device="cpu")
    details = tmp_path / "runs" / "evaluate.json"
    models = [world["root"] / "base", world["root"] / "instruct"]
    result = evaluate_stage.run(cfg, world["shards"], models, out, details)
    ran = json.loads(details.read_text())
    # the DVC metric: the first model's bits per byte; every figure is in the run details
    headline = json.loads(out.read_text())
    assert headline == {"base": {"bits_per_byte": ran["base"]["bits_per_byte"]}}
    assert 0 < ran.pop("wall_seconds") < 60  # the stage's wall time, for the report
    assert ran.pop("params") == {"evaluate": dataclasses.asdict(cfg)}  # as it ran
    written = ran
    assert written == json.loads(json.dumps(result))
    enc = load_tokenizer(world["tok"])
    ids = np.asarray(world["ids"])
    n_bytes = len(TEXT.encode()) + len(TEXT[:90].encode()) - len(enc.decode_bytes([int(ids[0])]))
    for name in ("base", "instruct"):
        model, _ = load_model(world["root"] / name)
        direct = perplexity(model, ids, stride=8, batch_size=1)
        entry = written[name]
        assert entry["perplexity"] == pytest.approx(direct["perplexity"], rel=1e-6)
        assert entry["tokens"] == len(ids) - 1
        assert entry["bytes"] == n_bytes
        assert entry["bits_per_byte"] == pytest.approx(direct["nll"] / math.log(2) / n_bytes)
    assert written["base"]["perplexity"] != written["instruct"]["perplexity"]


def test_cli_stage_mode_prints_one_summary_line_and_keeps_details_in_files(
    world: dict[str, Path], tmp_path: Path
) -> None:
    """Under the DAG (--out) the DVC log gets one line, headline figures and paths; the metrics
    and run details stay in their files."""
    out, details = tmp_path / "evaluate.json", tmp_path / "run.json"
    models = [world["root"] / "base", world["root"] / "instruct"]
    args = ["evaluate", "--shards", str(world["shards"]), "--details", str(details)]
    args += [arg for m in models for arg in ("--model", str(m))]
    result = runner.invoke(
        app, [*args, "--out", str(out), "--stride", "16", "-S", "evaluate.device=cpu"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # summaries and progress go to stderr; stdout is for results
    summary, written = said.wrote(result.stderr, "evaluate")
    assert written == said.paths(out, details)
    ran = json.loads(details.read_text())
    written = {name: ran[name] for name in ("base", "instruct")}
    assert summary == "; ".join(
        f"{name} perplexity {m['perplexity']:.1f}, {m['bits_per_byte']:.3f} bits/byte"
        for name, m in written.items()
    )
    assert written["base"]["stride"] == 16


def test_cli_text_mode_prints_one_json_object(world: dict[str, Path], tmp_path: Path) -> None:
    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT, encoding="utf-8")
    model_dir = world["root"] / "base"
    args = ["evaluate", "--model", str(model_dir), "--text", str(text_file), "--stride", "16"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"perplexity", "tokens", "bits_per_byte", "model", "file"} <= set(data)
    assert "wrote" not in result.stderr  # it writes no file
    assert data["model"] == str(model_dir) and data["file"] == str(text_file)
    enc = load_tokenizer(model_dir)
    ids = enc.encode_ordinary(TEXT)
    model, _ = load_model(model_dir)
    direct = perplexity(model, ids, stride=16)
    assert data["tokens"] == len(ids) - 1
    assert data["perplexity"] == pytest.approx(direct["perplexity"], rel=1e-6)
    assert data["stride"] == 16
    # an untrained model over a 50k vocabulary is near-uniform: perplexity near the vocabulary
    assert 20_000 < data["perplexity"] < 100_000


def test_stride_beyond_context_is_bad_input(world: dict[str, Path], tmp_path: Path) -> None:
    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT, encoding="utf-8")
    args = ["--model", str(world["root"] / "base"), "--text", str(text_file), "--stride", "33"]
    result = runner.invoke(app, ["evaluate", *args])
    assert result.exit_code == 2
    assert "evaluate.stride" in result.stderr


def test_missing_model_dir_and_text_file_exit_2_naming_them(
    world: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "nope"
    out = tmp_path / "evaluate.json"
    args = [
        "evaluate",
        "--shards",
        str(world["shards"]),
        "--model",
        str(missing),
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert str(missing) in result.stderr
    assert not out.exists()
    args = ["evaluate", "--model", str(world["root"] / "base"), "--text", str(missing)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert str(missing) in result.stderr


def test_model_with_another_tokenizer_is_bad_input(world: dict[str, Path], tmp_path: Path) -> None:
    small_tok = tmp_path / "small-tok"
    save_tokenizer(small_tok, {bytes([b]): b for b in range(256)}, kind="bpe", pattern="gpt2")
    make_model(tmp_path / "bytes", small_tok, 3, vocab=257)
    out = tmp_path / "evaluate.json"
    cfg = EvaluateConfig(device="cpu")
    with pytest.raises(BadInput, match="vocabulary of 257"):
        evaluate_stage.run(cfg, world["shards"], [tmp_path / "bytes"], out)
    # same vocabulary size, different tokenizer files
    other = tmp_path / "other-tok"
    save_gpt2(other)
    (other / "tokenizer.json").write_text(
        (other / "tokenizer.json").read_text().replace('"kind": "gpt2"', '"kind": "copy"')
    )
    make_model(tmp_path / "other", other, 4)
    with pytest.raises(BadInput, match="tokenizer"):
        evaluate_stage.run(cfg, world["shards"], [tmp_path / "other"], out)
    assert not out.exists()


# ----------------------------------------------------------------------------- --source


def test_source_accepts_a_path_an_archive_member_and_a_url(
    world: dict[str, Path], tmp_path: Path
) -> None:
    import zipfile

    from gptpipe.evaluation import corpus_tokens, evaluate_source

    base = world["root"] / "base"

    docs = ["First document, in which a cat sits.", "Second: the dog " * 8, "Third."]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n<|endoftext|>\n".join(docs) + "\n")
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as z:
        z.write(corpus, "data/corpus.txt")
    enc = load_tokenizer(base)
    tokens = corpus_tokens(enc, corpus)
    expected_ids = []
    for d in [*docs[:-1], docs[-1] + "\n"]:  # the file's final newline is the last document's
        expected_ids += [*enc.encode_ordinary(d), eot_id(enc)]
    assert tokens.tolist() == expected_ids  # documents as the shards hold them
    cfg = EvaluateConfig(stride=16, batch_size=4, device="cpu")
    model, _ = load_model(base)
    want = perplexity(model, tokens, 16, 4)["perplexity"]
    args = ["evaluate", "--model", str(base), "-S", "evaluate.stride=16"]
    result = runner.invoke(app, [*args, "--source", str(corpus)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["perplexity"] == pytest.approx(want, rel=1e-6)
    member = evaluate_source(cfg, base, f"{tmp_path / 'c.zip'}#corpus.txt")
    assert member["perplexity"] == pytest.approx(want, rel=1e-6)
    with serve_folder(tmp_path) as server:
        url = server.url("/c.txt")
        by_url = evaluate_source(cfg, base, url)
    assert server.hits["/c.txt"] == 1
    assert by_url["perplexity"] == pytest.approx(want, rel=1e-6) and by_url["source"] == url
    for bad, named in (
        (str(tmp_path / "none.txt"), "none.txt"),
        ("nosuchset", "nosuchset"),
    ):
        result = runner.invoke(app, [*args, "--source", bad])
        assert result.exit_code == 2 and named in result.stderr, result.stderr
    result = runner.invoke(app, [*args, "--source", str(corpus), "--text", str(corpus)])
    assert result.exit_code == 2 and "--source" in result.stderr


@pytest.mark.slow  # a 1 MB corpus; --source itself is covered fast by the test above
@needs_mirror
def test_source_reads_a_named_set_from_the_mirror(tmp_path: Path) -> None:
    from gptpipe.evaluation import evaluate_source

    save_tokenizer(
        tmp_path / "bytes", {bytes([i]): i for i in range(256)}, kind="bpe", pattern="gpt2"
    )
    torch.manual_seed(0)
    tiny = GPT(GPTConfig(vocab_size=257, block_size=512, n_layer=1, n_head=1, n_embd=8))
    save_model(tmp_path / "m", tiny, tmp_path / "bytes")
    cfg = EvaluateConfig(stride=512, batch_size=64, device="cpu")
    result = evaluate_source(cfg, tmp_path / "m", "tinyshakespeare", MIRROR)
    assert result["source"] == "tinyshakespeare"
    assert result["bytes"] > 1_000_000 and math.isfinite(result["perplexity"])
