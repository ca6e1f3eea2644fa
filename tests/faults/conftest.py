"""The fault suite: shared fixtures, and the count of fault cases printed at the end of a run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers.tiny import byte_tokenizer, corpus_text

from gptpipe.config import ShardConfig
from gptpipe.model.folder import save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.stages import shard

HERE = Path(__file__).parent


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """`fault cases: N passed` (and how many did not) for the tests under tests/faults."""

    def ours(kind: str) -> int:
        reports = terminalreporter.stats.get(kind, [])
        return sum(
            1
            for r in reports
            if getattr(r, "when", "call") == "call"
            and Path(str(getattr(r, "fspath", ""))).resolve().is_relative_to(HERE)
        )

    passed, failed, skipped = ours("passed"), ours("failed"), ours("skipped")
    if passed or failed or skipped:
        extra = "".join(f", {n} {k}" for k, n in (("failed", failed), ("skipped", skipped)) if n)
        terminalreporter.write_line(f"fault cases: {passed} passed{extra}")


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny finished pipeline (corpus, byte tokenizer, shards, model folder), built once;
    tests copy what they break (`broken`)."""
    root = tmp_path_factory.mktemp("pipeline")
    corpus = root / "corpus.txt"
    corpus.write_text(corpus_text(sentences=400), encoding="utf-8")
    tokenizer = byte_tokenizer(root / "tokenizer")
    shards = root / "shards"
    cfg = ShardConfig(shard_tokens=4096, split_chunk_tokens=64, val_fraction=0.2, workers=1)
    shard.run(cfg, corpus, tokenizer, shards, show_progress=False)
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=257, block_size=16, n_layer=1, n_head=2, n_embd=16)
    model = root / "model"
    save_model(model, GPT(config), tokenizer, meta={"stage": "pretrain"})
    return {
        "root": root,
        "corpus": corpus,
        "tokenizer": tokenizer,
        "shards": shards,
        "model": model,
    }


@pytest.fixture
def broken(pipeline: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """A private copy of the tiny pipeline, to break."""
    out: dict[str, Path] = {}
    for name, path in pipeline.items():
        if name == "root":
            continue
        target = tmp_path / path.name
        if path.is_dir():
            shutil.copytree(path, target)
        else:
            shutil.copyfile(path, target)
        out[name] = target
    out["root"] = tmp_path
    return out
