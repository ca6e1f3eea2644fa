"""Deterministic splits of fine-tuning data: shuffled fractions, and stratified splits that keep
every class in every split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The splits of classification data, in the order `stratified_split` returns them.
CLASSIFY_SPLITS = ("train", "val", "test")

# --------------------------------------------------------------------------- shared


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Shuffle range(n) with `seed` and cut it into held-out parts of the given fractions
    (each at least one item) followed by the rest; each part is returned sorted."""
    order = np.random.default_rng(seed).permutation(n)
    parts, start = [], 0
    for fraction in fractions:
        size = max(1, round(n * fraction))
        parts.append(np.sort(order[start : start + size]))
        start += size
    parts.append(np.sort(order[start:]))
    return parts


def stratified_split(
    labels: Sequence[int], val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices: each class is shuffled and cut in the same proportions,
    so every split keeps the class balance. Sorted within each split."""
    label_array = np.asarray(labels)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(label_array):
        members = np.flatnonzero(label_array == c)
        n = len(members)
        n_val, n_test = round(n * val_fraction), round(n * test_fraction)
        order = members[np.random.default_rng((seed, int(c))).permutation(n)]
        parts[0].append(order[n_val + n_test :])
        parts[1].append(order[:n_val])
        parts[2].append(order[n_val : n_val + n_test])
    train, val, test = (np.sort(np.concatenate(p)) for p in parts)
    return train, val, test
