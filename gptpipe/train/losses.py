"""The losses the training loop minimises: next-token cross-entropy (fused head, prompt tokens
masked with IGNORE) and classification cross-entropy, plus the validation loss of a language model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from gptpipe.train.distributed import through_forward

IGNORE = -100  # target id the loss skips


def lm_loss(model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the targets that are not IGNORE, for training: the
    model's fused head + loss (no full logits; see gptpipe.model.linear_cross_entropy)."""
    x, y = batch
    _, loss = model(x, y, with_logits=False)
    return loss


def masked_lm_loss(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Token-weighted mean loss over whole batches (call under no_grad, eval mode), through the
    model's fused head + loss as training's: the (B, T, V) logits are never held (with GPT-2's
    vocabulary, 400 MB of float32 per batch of 8 x 256 that validation used to write).
    `batches` is only iterated, once: a progress bar's `track` of them shows how far it is."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        scored = int((y != IGNORE).sum())
        if scored == 0:
            continue
        _, loss = model(x, y, with_logits=False)  # the mean over the scored targets
        total += float(loss) * scored
        count += scored
    return total / max(count, 1)


def classify_loss(model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of the classifier's logits (`GPT.classify`; through the forward of
    DistributedDataParallel when training wraps the model in it)."""
    x, lengths, labels = batch
    logits = cast(torch.Tensor, through_forward(model, "classify", x, lengths))
    return F.cross_entropy(logits.float(), labels)
