"""Mixed precision: autocast to bf16/fp16 where it pays, evaluation mode, and the gradient scaler
that fp16 needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from gptpipe.runtime import resolve_dtype


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast to `dtype` (already resolved: bfloat16 or float16, CPU and CUDA); nothing
    for float32."""
    if dtype in ("bfloat16", "float16"):
        return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))
    return contextlib.nullcontext()


@contextlib.contextmanager
def evaluating(model: nn.Module, dtype: str) -> Iterator[None]:
    """Eval mode, no grad and the run's autocast; the previous mode is restored after.

    `dtype` is the run's resolved dtype (`Placement.dtype`) or a params value (`auto` is
    resolved here, for a stage evaluating after training)."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad(), autocast(device, resolve_dtype(dtype, device)):
            yield
    finally:
        model.train(was_training)


def grad_scaler(device: torch.device, dtype: str) -> torch.amp.GradScaler | None:
    """A gradient scaler for float16 autocast (its small range underflows gradients without
    one: the classic NaN of fp16 training); bfloat16 and float32 need none."""
    if dtype == "float16":
        return torch.amp.GradScaler(device.type)
    return None
