"""The real pipeline as a tiny DVC project: the repository's dvc.yaml, stages and package in a
temporary git + DVC repository, with params small enough that the whole DAG runs in about a
minute on 2 cores. Shared by the tests that drive real `dvc` (the pipeline, remotes, the
experiment queue)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from helpers.dvcrepo import new_repository
from helpers.tiny import corpus_text

REPO = Path(__file__).resolve().parents[2]

TINY = {
    # A small local corpus (tests/helpers/tiny.py's grammar) keeps tokenizer, shard and
    # evaluate quick, and a small local labelled set classify; both in data.inputs, the folder
    # DVC watches. The instruction set stays the offline default.
    "data": {"corpus": "data/inputs/tiny_corpus.txt", "classify": "data/inputs/labels.tsv"},
    "tokenizer": {"vocab_size": 320},
    "shard": {"split_chunk_tokens": 256},
    "model": {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32},
    "pretrain": {
        "max_steps": 16,
        "batch_size": 4,
        "eval_interval": 8,
        "eval_batches": 2,
        "warmup_steps": 2,
    },
    "instruct": {
        "max_steps": 4,
        "batch_size": 2,
        "eval_interval": 2,
        "eval_batches": 2,
        "warmup_steps": 1,
        "max_new_tokens": 4,
    },
    "classify": {
        "epochs": 0.0,
        "max_steps": 4,
        "batch_size": 4,
        "eval_interval": 2,
        "eval_batches": 2,
        "warmup_steps": 1,
    },
    "evaluate": {"stride": 32, "batch_size": 64},  # stride = context: fewest windows
    "sample": {"prompts": ["The "], "max_new_tokens": 6, "num_samples": 1},
}
# Two classes a model can tell by a word: enough records for every split.
LABELS = "".join(
    f"{'pos' if i % 2 else 'neg'}\t{'good' if i % 2 else 'bad'} {i}\n" for i in range(80)
)
ALL_STAGES = {
    "download",
    "tokenizer",
    "shard",
    "pretrain",
    "weights",
    "finetune-instruct",
    "finetune-classify",
    "evaluate",
    "sample",
    "report",
}


def ran_stages(output: str) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` output says it ran."""
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def tiny_project(root: Path) -> Path:
    """`root` as a committed git + DVC repository holding the pipeline with the TINY params
    (nothing run yet)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("gptpipe", "stages"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    for name in ("dvc.yaml", ".dvcignore", "data/inputs/README.md"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    inputs = root / "data" / "inputs"
    (inputs / "tiny_corpus.txt").write_text(corpus_text(sentences=6000), encoding="utf-8")
    (inputs / "labels.tsv").write_text(LABELS, encoding="utf-8")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    new_repository(root, "tiny project")
    return root
