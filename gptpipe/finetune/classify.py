"""Classification data for fine-tuning: labelled texts, collated batches and the classifier's
metrics (loss, accuracy, the majority-class baseline).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gptpipe.errors import BadInput
from gptpipe.model.gpt import GPT

# --------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class Labelled:
    label: str
    text: str


def read_labelled(path: Path) -> list[Labelled]:
    """Read `label<TAB>text` lines (no header; blank lines skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise BadInput(f"{path}: classification data not found") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not UTF-8 text ({exc})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab or not label.strip():
            raise BadInput(f"{path}: line {number} is not 'label<TAB>text'")
        records.append(Labelled(label.strip(), text))
    labels = {r.label for r in records}
    if len(labels) < 2:
        raise BadInput(f"{path}: needs at least 2 distinct labels, found {sorted(labels)}")
    return records


def collate_classify(
    examples: Sequence[tuple[list[int], int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids right-padded with `pad_id`, true lengths, label ids)."""
    width = max(len(ids) for ids, _ in examples)
    x = torch.full((len(examples), width), pad_id, dtype=torch.long)
    for row, (ids, _) in enumerate(examples):
        x[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    lengths = torch.tensor([len(ids) for ids, _ in examples], dtype=torch.long)
    labels = torch.tensor([label for _, label in examples], dtype=torch.long)
    return x, lengths, labels


def classify_metrics(
    model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
) -> tuple[float, float]:
    """(mean loss, accuracy) over whole batches (call under no_grad, eval mode)."""
    device = next(model.parameters()).device
    total, correct, count = 0.0, 0, 0
    for batch in batches:
        x, lengths, labels = (t.to(device) for t in batch)
        logits = cast(GPT, model).classify(x, lengths).float()
        total += float(F.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(dim=-1) == labels).sum())
        count += len(labels)
    return total / max(count, 1), correct / max(count, 1)


def majority_accuracy(train_labels: Sequence[int], labels: Sequence[int]) -> float:
    """Accuracy of always answering the most frequent training label (ties: lowest id)."""
    if len(labels) == 0:
        return 0.0
    counts = Counter(int(v) for v in train_labels)
    majority = min(counts, key=lambda c: (-counts[c], c))
    return float(np.mean(np.asarray(labels) == majority))
