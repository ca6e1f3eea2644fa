"""What the device tests share: the `device` parameters (the CPU always, CUDA marked `cuda` and
skipped without a GPU), TF32 switched off around a float32 comparison, and a tiny model placed
on a device.

Each test of tests/cuda runs its body on the CPU too (unmarked), so that the logic of a check
that only a GPU can make in earnest is itself exercised on every CI run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from helpers.training import tiny

from gptpipe.model.gpt import GPT

HAS_CUDA = torch.cuda.is_available()
NO_CUDA = "needs a CUDA GPU (this machine or torch build has none)"
CUDA_MARKS = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)]
# the CPU twin always; CUDA selected by `pytest -m cuda` and skipped without one
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA_MARKS, id="cuda")]


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 matmuls set to `enabled` inside, the previous settings restored after (the
    training `prepare` turns them on for the whole process)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def tiny_on(device: str, seed: int = 0) -> GPT:
    """`helpers.training.tiny`'s model (same initialisation for the same seed) on `device`."""
    return tiny(seed=seed).to(torch.device(device))
