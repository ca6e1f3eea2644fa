"""A tiny language model and a counting task it learns in a few steps, for the loop's tests."""

from __future__ import annotations

from typing import Any

import torch

from gptpipe.config import PretrainConfig
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.train.loop import TrainResult, train
from gptpipe.train.losses import lm_loss

VOCAB, BLOCK = 64, 16


def tiny(dropout: float = 0.0, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=2, n_embd=32)
    config.dropout = dropout
    return GPT(config)


def counting_batch(i: int, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences counting up mod VOCAB from a start that depends on i: easy to learn."""
    g = torch.Generator().manual_seed(i)
    starts = torch.randint(0, VOCAB, (batch_size, 1), generator=g)
    seq = (starts + torch.arange(BLOCK + 1)) % VOCAB
    return seq[:, :-1], seq[:, 1:]


FIXED_VAL = [counting_batch(10_000 + k) for k in range(2)]


def val_loss(model: torch.nn.Module) -> dict[str, float]:
    losses = [float(model(x, y)[1]) for x, y in FIXED_VAL]
    return {"val_loss": sum(losses) / len(losses)}


def cfg(**kw: Any) -> PretrainConfig:
    base: dict[str, Any] = dict(
        max_steps=30,
        batch_size=8,
        learning_rate=3e-3,
        min_lr=3e-4,
        warmup_steps=5,
        eval_interval=10,
        eval_batches=1,
        log_interval=5,
        checkpoint_interval=0,
        dtype="float32",
    )
    return PretrainConfig(**(base | kw))


def run(model: GPT, config: PretrainConfig, **kw: Any) -> TrainResult:
    return train(model, config, batch_at=counting_batch, loss_of=lm_loss, validate=val_loss, **kw)
