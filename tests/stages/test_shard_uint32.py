"""A vocabulary above 65,535 ids: a real 100k BPE from the tokenizer stage, shards of uint32
ids (ids past 65,535 in them, manifest.json saying so), and a few pretraining steps on them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml
from helpers.tiny import MODEL
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.config import ModelConfig, PretrainConfig
from gptpipe.model.folder import load_model
from gptpipe.stages import pretrain
from gptpipe.tokenizer.folder import load_tokenizer
from gptpipe.tokenizer.special import EOT
from gptpipe.tokens.shards import TokenWindows, load_split, read_manifest
from gptpipe.train.recipe import TrainingPaths

runner = CliRunner()
VOCAB = 100_000


def documents() -> list[str]:
    """32,000 distinct random words: enough pairs left to learn 99,743 merges (the BPE
    trainer needs about 6 s), and each word's last merges get ids past 65,535."""
    rng = np.random.default_rng(0)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    words = ["".join(rng.choice(letters, int(rng.integers(6, 13)))) for _ in range(32_000)]
    return [" ".join(words[i : i + 100]) for i in range(0, len(words), 100)]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The corpus, its 100k BPE (tokenizer stage) and its shards (shard stage), by the CLI."""
    root = tmp_path_factory.mktemp("uint32")
    (root / "corpus.txt").write_text(f"\n{EOT}\n".join(documents()) + "\n", encoding="utf-8")
    params = root / "params.yaml"
    settings = {
        "tokenizer": {"vocab_size": VOCAB, "workers": 1},
        "shard": {"split_chunk_tokens": 256, "shard_tokens": 10_000, "val_fraction": 0.2},
    }
    params.write_text(yaml.safe_dump(settings))
    for stage, out in (("tokenizer", "tokenizer"), ("shard", "shards")):
        args = [stage, "--params", params, "--corpus", root / "corpus.txt", "--out", root / out]
        if stage == "shard":
            args += ["--tokenizer", root / "tokenizer"]
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    return root


def test_a_100k_bpe_shards_as_uint32_with_ids_past_65535(work):
    encoding = load_tokenizer(work / "tokenizer")
    assert encoding.n_vocab == VOCAB
    manifest = read_manifest(work / "shards")
    assert manifest["dtype"] == "uint32" and manifest["vocab_size"] == VOCAB
    assert manifest["eot_id"] == VOCAB - 1
    first = work / "shards" / manifest["splits"]["train"]["files"][0]
    with pa.memory_map(str(first)) as source:
        assert pa.ipc.open_file(source).schema.field("tokens").type == pa.uint32()
    train, val = (load_split(work / "shards", split) for split in ("train", "val"))
    assert train.dtype == np.uint32 and len(manifest["splits"]["train"]["files"]) > 1
    stream = np.concatenate([train, val])
    assert int((stream > 65535).sum()) > len(stream) // 10  # not a handful: a large share
    assert int((stream == VOCAB - 1).sum()) == len(documents())  # <|endoftext|> after each
    # the ids are the tokenizer's, not wrapped: the training split decodes to corpus words
    words = set(" ".join(documents()).split())
    decoded = encoding.decode(train.tolist()).replace(EOT, " ").split()
    assert sum(w in words for w in decoded) > 0.95 * len(decoded)


def test_pretraining_reads_the_uint32_shards(work, tmp_path):
    windows = TokenWindows(work / "shards", "train", block_size=MODEL["block_size"])
    x, y = windows.get_batch(range(len(windows)))
    assert int(x.max()) > 65535 and (x[:, 1:] == y[:, :-1]).all()
    paths = TrainingPaths(
        tmp_path / "model", tmp_path / "metrics.json", tmp_path / "plots", tmp_path / "ckpt"
    )
    train = {"max_steps": 3, "batch_size": 4, "eval_interval": 3, "eval_batches": 1}
    settings = train | {"warmup_steps": 1, "log_interval": 1, "checkpoint_interval": 0}
    metrics = pretrain.run(
        ModelConfig(**MODEL),
        PretrainConfig(**settings, threads=1),
        work / "shards",
        work / "tokenizer",
        paths,
    )
    assert metrics["steps"] == 3 and math.isfinite(metrics["val_loss"])
    assert metrics["val_loss"] > 0.5 * math.log(VOCAB)  # three steps: near uniform guessing
    model, _ = load_model(tmp_path / "model")
    assert model.config.vocab_size == VOCAB
