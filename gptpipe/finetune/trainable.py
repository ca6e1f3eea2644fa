"""Which weights a fine-tuning trains (`trainable`: all, last_blocks or lora), through
`requires_grad`: the optimizer takes only the parameters that require a gradient.
"""

from __future__ import annotations

import copy
import math
from typing import Any, TypeVar

from torch import nn

from gptpipe.config import FinetuneConfig
from gptpipe.errors import ConfigError
from gptpipe.model.gpt import GPT
from gptpipe.model.lora import apply_lora, merge_lora

C = TypeVar("C", bound=FinetuneConfig)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Parameters of `model` (a tied weight once), or only those that require a gradient."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def select_trainable(model: GPT, cfg: FinetuneConfig) -> dict[str, Any]:
    """Set what trains in `model` (in place; LoRA wraps modules) and return the counts:
    {"trainable_params": what trains, "total_params": the saved model's size}.

    - all: every weight.
    - last_blocks: the last `trainable_blocks` blocks, the final LayerNorm and a classifier
      head. A language model's head is tied to the token embeddings, which stay frozen.
    - lora: adapters on `lora_targets` only, plus a classifier head unless `head` is one of
      the targets (then the head stays frozen and is adapted, as the book does).
    """
    section = cfg._section()
    total = count_parameters(model)
    classifier = model.config.n_classes > 0
    if cfg.trainable == "all":
        for p in model.parameters():
            p.requires_grad_(True)
    elif cfg.trainable == "last_blocks":
        k, n = cfg.trainable_blocks, model.config.n_layer
        if k > n:
            raise ConfigError(
                f"{section}.trainable_blocks", f"{k} exceeds the base model's {n} blocks"
            )
        for p in model.parameters():
            p.requires_grad_(False)
        trained: list[nn.Module] = [*model.h[n - k :], model.ln_f]
        if classifier:
            trained.append(model.score)
        for module in trained:
            for p in module.parameters():
                p.requires_grad_(True)
    else:
        apply_lora(
            model,
            cfg.lora_targets,
            cfg.lora_rank,
            cfg.lora_alpha,
            cfg.lora_dropout,
            key=f"{section}.lora_targets",
        )
        if classifier and "head" not in cfg.lora_targets:
            for p in model.score.parameters():
                p.requires_grad_(True)
    return {"trainable_params": count_parameters(model, trainable_only=True), "total_params": total}


def finished(model: GPT) -> GPT:
    """The model as it is saved: adapters merged into the weights (a plain GPT), all weights
    marked trainable again so that nothing downstream inherits a frozen state."""
    merge_lora(model)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def with_epochs(cfg: C, n_train: int, processes: int = 1) -> C:
    """`cfg` with max_steps set from `epochs` (when > 0): enough optimizer steps for that many
    passes over `n_train` examples, a step taking a global batch of `processes` * batch_size *
    grad_accum. The copy keeps `epochs` (it is what ran, and the run details record both); it
    is not validated again, as params with both set would be."""
    if cfg.epochs <= 0:
        return cfg
    per_step = processes * cfg.batch_size * cfg.grad_accum
    derived = copy.copy(cfg)
    derived.max_steps = max(1, math.ceil(cfg.epochs * n_train / per_step))
    return derived
