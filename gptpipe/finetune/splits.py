"""Deterministic splits of fine-tuning data: shuffled fractions, stratified splits that keep
every class in every split, the book's balanced split, and in-order shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gptpipe.errors import BadInput

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


def balanced_split(
    labels: Sequence[int], val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices of the book's protocol (Raschka, ch. 6): every class is
    undersampled to the smallest class's count (a seeded choice), the kept records are
    shuffled, and cut in order: train int(n * (1 - val - test)), val int(n * val), test the
    rest. For SMS spam: 747 + 747 = 1,494 -> 1,045 / 149 / 300. Each split keeps the shuffled
    order (it is the training order of nothing: batches are drawn by the sampler)."""
    array = np.asarray(labels)
    classes = np.unique(array)
    smallest = min(int((array == c).sum()) for c in classes)
    rng = np.random.default_rng(seed)
    kept = np.concatenate(
        [np.sort(rng.choice(np.flatnonzero(array == c), smallest, replace=False)) for c in classes]
    )
    order = kept[rng.permutation(len(kept))]
    n = len(order)
    n_train = int(n * (1 - val_fraction - test_fraction) + 1e-9)
    n_val = int(n * val_fraction + 1e-9)
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


def ordered_split(n: int, shares: Sequence[float]) -> list[np.ndarray]:
    """range(n) cut in order into parts of int(n * share) items, the last part taking the rest
    (the book's 85/10/5 instruction split: 935 / 110 / 55 of 1,100)."""
    parts, start = [], 0
    for share in shares[:-1]:
        size = int(n * share + 1e-9)
        parts.append(np.arange(start, start + size))
        start += size
    parts.append(np.arange(start, n))
    return parts


# --------------------------------------------------------------------------- the stages' splits

INSTRUCT_SPLITS = ("train", "test", "val")  # the order of instruct.split's shares


def instruct_splits(
    n: int, shares: Sequence[float], shuffle: bool, seed: int, data: Path
) -> dict[str, np.ndarray]:
    """Train / test / val indices of `n` instruction records: the shares of instruct.split in
    file order (or shuffled with the seed first); every split must hold a record."""
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    cut = ordered_split(n, shares)
    parts = {name: order[idx] for name, idx in zip(INSTRUCT_SPLITS, cut, strict=True)}
    for name, idx in parts.items():
        if len(idx) == 0:
            raise BadInput(
                f"{data}: {n} records leave the {name} split empty; add records or change "
                "instruct.split"
            )
    return parts


def classify_splits(
    targets: Sequence[int],
    labels: Sequence[str],
    protocol: str,
    fractions: tuple[float, float],
    seed: int,
    data: Path,
) -> dict[str, np.ndarray]:
    """Train / val / test indices of labelled records under `protocol` (stratified or the
    book's balanced one) with the (val, test) `fractions`: every split non-empty, and every
    class in the training and the test split."""
    cut = balanced_split if protocol == "balanced" else stratified_split
    splits = dict(zip(CLASSIFY_SPLITS, cut(targets, *fractions, seed), strict=True))
    for name, indices in splits.items():
        if len(indices) == 0:
            raise BadInput(
                f"{data}: {len(targets)} records leave the {name} split empty; add records or "
                f"change classify.val_fraction / classify.test_fraction"
            )
    for name in ("train", "test"):
        present = {targets[int(i)] for i in splits[name]}
        for c, label in enumerate(labels):
            if c not in present:
                raise BadInput(
                    f"{data}: class {label!r} ({list(targets).count(c)} records) is absent "
                    f"from the {name} split; add records of it or change classify.test_fraction"
                )
    return splits
