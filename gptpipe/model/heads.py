"""Heads on the shared transformer: a classifier built from a language model's weights."""

from __future__ import annotations

from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.model.tensors import without_tied


def with_classifier(model: GPT, n_classes: int) -> GPT:
    """A classifier sharing `model`'s transformer weights, with a fresh `score` head."""
    config = GPTConfig(**{**model.config.to_dict(), "n_classes": n_classes})
    classifier = GPT(config)
    state = without_tied(model.state_dict())
    missing, _ = classifier.load_state_dict(state, strict=False)
    assert set(missing) <= {"score.weight", "score.bias"}, missing
    return classifier.to(next(model.parameters()).device)
