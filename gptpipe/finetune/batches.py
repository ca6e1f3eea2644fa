"""Batching fine-tuning data: fixed validation batches, collated batches, context lengths."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tiktoken

from gptpipe.errors import ConfigError


def context_length(max_length: int, block_size: int, key: str) -> int:
    """`max_length` (0: the model's block_size); longer than the context is bad input."""
    if max_length > block_size:
        raise ConfigError(key, f"{max_length} exceeds the base model's block_size {block_size}")
    return max_length or block_size


def encode(enc: tiktoken.Encoding, text: str) -> list[int]:
    """Encode user text; a literal `<|endoftext|>` in it is plain text, not the special id."""
    return enc.encode_ordinary(text)


def fixed_batches(n: int, batch_size: int, max_batches: int) -> list[np.ndarray]:
    """Consecutive batches over range(n), at most `max_batches` of them (validation)."""
    stop = min(n, batch_size * max_batches)
    return [np.arange(s, min(s + batch_size, stop)) for s in range(0, stop, batch_size)]


def batches_of(
    examples: Sequence, batch_size: int, collate: Callable[[Sequence], tuple]
) -> list[tuple]:
    """All examples in order, in collated batches of `batch_size`."""
    return [collate(examples[s : s + batch_size]) for s in range(0, len(examples), batch_size)]


def length_batches(
    examples: Sequence, batch_size: int, collate: Callable[[Sequence], tuple]
) -> list[tuple]:
    """All examples in collated batches of `batch_size`, shortest first: for scoring a whole
    split (results that do not depend on the order), with the least padding."""
    ordered = sorted(examples, key=lambda example: len(example[0]))
    return batches_of(ordered, batch_size, collate)
