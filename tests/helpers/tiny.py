"""A tiny pretraining setup: a grammar corpus a small model learns in a few steps, a byte
tokenizer, its shards, params for a 2-layer model; and a small random base model for the
fine-tuning stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from gptpipe.config import ShardConfig
from gptpipe.model.folder import save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.prompts import format_prompt
from gptpipe.stages import shard
from gptpipe.tokenizer.bpe import train_bpe
from gptpipe.tokenizer.folder import PATTERNS, save_tokenizer

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


def shard_workdir(root: Path) -> Path:
    """`root` with corpus.txt (`corpus_text`), a byte tokenizer and the shards the real shard
    stage makes of them (4,096-token shards, 256-token split chunks)."""
    (root / "corpus.txt").write_text(corpus_text())
    byte_tokenizer(root / "tokenizer")
    shard.run(
        ShardConfig(shard_tokens=4096, split_chunk_tokens=256),
        root / "corpus.txt",
        root / "tokenizer",
        root / "shards",
        show_progress=False,
    )
    return root


def prompt_base(root: Path) -> Path:
    """A small random base model (root/base) with a real BPE (root/tok) trained on the
    Alpaca prompt format, so that a prompt takes ~45 tokens and a 64-token context holds
    prompt and response."""
    documents = [format_prompt("Reverse the word.", "cat") * 3, "good great fine !! ??"]
    ranks = train_bpe(documents, 340, PATTERNS["gpt2"], show_progress=False).ranks
    save_tokenizer(root / "tok", ranks, "bpe", "gpt2")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=340, block_size=64, n_layer=2, n_head=2, n_embd=32))
    save_model(root / "base", model, root / "tok", meta={"stage": "pretrain"})
    return root / "base"
