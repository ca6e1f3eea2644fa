"""A tiny pretraining setup: a grammar corpus a small model learns in a few steps, a byte
tokenizer, and params for a 2-layer model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from gptpipe.tokenizer.folder import save_tokenizer

MODEL = {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32}
TRAIN = {
    "max_steps": 40,
    "batch_size": 8,
    "learning_rate": 3e-3,
    "min_lr": 3e-4,
    "warmup_steps": 5,
    "eval_interval": 20,
    "eval_batches": 2,
    "log_interval": 10,
    "checkpoint_interval": 0,
    "threads": 1,
}


def corpus_text(seed: int = 0, sentences: int = 600) -> str:
    """Sentences from a small grammar: structure a tiny model can pick up in a few steps."""
    rng = np.random.default_rng(seed)
    subjects, verbs, objects = ["the cat", "a dog", "my friend"], ["sees", "likes"], ["fish", "tea"]
    docs = []
    for d in range(sentences // 20):
        docs.append(
            " ".join(
                f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}."
                for _ in range(20)
            )
            + f" ({d})"
        )
    return "\n<|endoftext|>\n".join(docs) + "\n"


def byte_tokenizer(path: Path) -> Path:
    save_tokenizer(path, {bytes([i]): i for i in range(256)}, kind="bpe", pattern="gpt2")
    return path


def write_params(path: Path, **train) -> Path:
    path.write_text(yaml.safe_dump({"model": MODEL, "pretrain": TRAIN | train}))
    return path
