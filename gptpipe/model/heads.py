"""Heads on the shared transformer: a classifier built from a language model's weights."""

from __future__ import annotations

from gptpipe.model.folder import (
    TIED,
)
from gptpipe.model.gpt import GPT, GPTConfig


def with_classifier(model: GPT, n_classes: int) -> GPT:
    """A classifier sharing `model`'s transformer weights, with a fresh `score` head."""
    config = GPTConfig(**{**model.config.to_dict(), "n_classes": n_classes})
    classifier = GPT(config)
    state = {k: v for k, v in model.state_dict().items() if k != TIED}
    missing, _ = classifier.load_state_dict(state, strict=False)
    assert set(missing) <= {"score.weight", "score.bias"}, missing
    return classifier.to(next(model.parameters()).device)
