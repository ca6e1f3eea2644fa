"""Classification data for fine-tuning: labelled texts (read with the download stage's reader),
collated batches, predictions, and the classifier's metrics (accuracy, precision, recall, F1
per class and macro, the confusion matrix, the majority-class baseline).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import tiktoken
import torch
import torch.nn.functional as F
from torch import nn

from gptpipe.errors import BadInput
from gptpipe.finetune.batches import encode
from gptpipe.model.gpt import GPT
from gptpipe.sources.formats import decode_text, parse_classify

# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Labelled:
    label: str
    text: str


def read_labelled(path: Path) -> list[Labelled]:
    """The labelled texts of a classification file, read by the formats module's reader
    (TSV as the download stage writes it, or CSV / JSON); at least 2 labels."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path}: classification data not found") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a folder, not a classification file") from None
    rows = parse_classify(decode_text(data, str(path)), str(path))
    return [Labelled(label, text) for label, text in rows]


def text_ids(enc: tiktoken.Encoding, text: str, max_length: int, eot: int) -> list[int]:
    """The ids the classifier reads: the text cut to `max_length` tokens; an empty text is
    one `<|endoftext|>`, so there is always a last token to read the class from."""
    return encode(enc, text)[:max_length] or [eot]


def collate_classify(
    examples: Sequence[tuple[list[int], int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids right-padded with `pad_id`, true lengths, label ids).

    Padding to the longest text of the batch instead of the longest of the split (as the book
    does) gives the same logits: attention is causal and the class is read from the last
    real token, so nothing after it is seen; it only spares computing the padding."""
    width = max(len(ids) for ids, _ in examples)
    x = torch.full((len(examples), width), pad_id, dtype=torch.long)
    for row, (ids, _) in enumerate(examples):
        x[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    lengths = torch.tensor([len(ids) for ids, _ in examples], dtype=torch.long)
    labels = torch.tensor([label for _, label in examples], dtype=torch.long)
    return x, lengths, labels


# --------------------------------------------------------------------------- predictions


def predict(
    model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
) -> tuple[float, np.ndarray, np.ndarray]:
    """(mean loss, predicted ids, true ids) over whole batches (call under no_grad, eval)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    predicted: list[np.ndarray] = []
    actual: list[np.ndarray] = []
    for batch in batches:
        x, lengths, labels = (t.to(device) for t in batch)
        logits = cast(GPT, model).classify(x, lengths).float()
        total += float(F.cross_entropy(logits, labels, reduction="sum"))
        count += len(labels)
        predicted.append(logits.argmax(dim=-1).cpu().numpy())
        actual.append(labels.cpu().numpy())
    if not predicted:
        return 0.0, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return total / max(count, 1), np.concatenate(predicted), np.concatenate(actual)


def classify_metrics(
    model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
) -> tuple[float, float]:
    """(mean loss, accuracy) over whole batches (call under no_grad, eval mode)."""
    loss, predicted, actual = predict(model, batches)
    return loss, float(np.mean(predicted == actual)) if len(actual) else 0.0


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float
    probabilities: dict[str, float]


@torch.no_grad()
def classify_texts(
    model: nn.Module,
    enc: tiktoken.Encoding,
    labels: Sequence[str],
    texts: Sequence[str],
    max_length: int,
    eot: int,
    batch_size: int = 32,
) -> list[Prediction]:
    """The most probable label of each text, with its softmax probability (model in eval)."""
    out: list[Prediction] = []
    examples = [(text_ids(enc, t, max_length, eot), 0) for t in texts]
    device = next(model.parameters()).device
    for start in range(0, len(examples), batch_size):
        x, lengths, _ = collate_classify(examples[start : start + batch_size], eot)
        logits = cast(GPT, model).classify(x.to(device), lengths.to(device))
        probs = F.softmax(logits.float(), dim=-1)
        for row in probs.cpu().tolist():
            best = int(np.argmax(row))
            out.append(Prediction(labels[best], row[best], dict(zip(labels, row, strict=True))))
    return out


# --------------------------------------------------------------------------- metrics


def majority_label(train_labels: Sequence[int]) -> int:
    """The most frequent training label (ties: the lowest id)."""
    counts = Counter(int(v) for v in train_labels)
    return min(counts, key=lambda c: (-counts[c], c))


def majority_accuracy(train_labels: Sequence[int], labels: Sequence[int]) -> float:
    """Accuracy of always answering the most frequent training label (ties: lowest id)."""
    if len(labels) == 0:
        return 0.0
    return float(np.mean(np.asarray(labels) == majority_label(train_labels)))


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[actual, predicted], (n_classes, n_classes)."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (actual, predicted), 1)
    return counts


def scores(actual: np.ndarray, predicted: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy; precision, recall and F1 per class and their unweighted (macro) means; the
    confusion matrix (rows: actual, columns: predicted). A class never predicted has
    precision 0 (and F1 0), as scikit-learn's zero_division=0."""
    n = len(labels)
    counts = confusion_matrix(actual, predicted, n)
    per_class: dict[str, dict[str, float]] = {}
    for c, label in enumerate(labels):
        tp = float(counts[c, c])
        predicted_c, actual_c = float(counts[:, c].sum()), float(counts[c, :].sum())
        precision = tp / predicted_c if predicted_c else 0.0
        recall = tp / actual_c if actual_c else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(actual_c),
        }
    macro = {
        k: float(np.mean([v[k] for v in per_class.values()])) for k in ("precision", "recall", "f1")
    }
    accuracy = float(np.trace(counts) / counts.sum()) if counts.sum() else 0.0
    return {
        "accuracy": accuracy,
        "macro": macro,
        "per_class": per_class,
        "confusion": counts.tolist(),
    }


# --------------------------------------------------------------------------- a tuned classifier

ClassifyBatches = Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def split_scores(
    model: nn.Module,
    splits: Mapping[str, ClassifyBatches],
    labels: Sequence[str],
    train_labels: Sequence[int],
    untuned: Mapping[str, float],
) -> tuple[dict[str, dict[str, Any]], list[dict[str, str]]]:
    """Each split's scores over its whole batches (call in eval mode): records, loss, the
    `scores` of its predictions, the majority-class baseline and the untuned head's accuracy
    (`untuned`, measured before training); and the test split's (actual, predicted) rows."""
    per_split: dict[str, dict[str, Any]] = {}
    test_rows: list[dict[str, str]] = []
    for name, batches in splits.items():
        loss, predicted, actual = predict(model, batches)
        per_split[name] = {
            "records": len(actual),
            "loss": loss,
            **scores(actual, predicted, labels),
            "majority_baseline": majority_accuracy(train_labels, actual.tolist()),
            "untuned_accuracy": untuned[name],
        }
        if name == "test":
            test_rows = [
                {"actual": labels[a], "predicted": labels[p]}
                for a, p in zip(actual.tolist(), predicted.tolist(), strict=True)
            ]
    return per_split, test_rows


def split_figures(per_split: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The flat figures of the run details: per split its accuracy, macro F1, untuned
    accuracy and majority baseline, the held-out splits' losses, and the test split's macro
    precision and recall."""
    figures: dict[str, float] = {}
    for name, split in per_split.items():
        figures[f"{name}_accuracy"] = split["accuracy"]
        figures[f"{name}_macro_f1"] = split["macro"]["f1"]
        if name != "train":
            figures[f"{name}_loss"] = split["loss"]
        figures[f"untuned_{name}_accuracy"] = split["untuned_accuracy"]
        figures[f"majority_baseline_{name}"] = split["majority_baseline"]
    test = per_split["test"]
    figures["test_macro_precision"] = test["macro"]["precision"]
    figures["test_macro_recall"] = test["macro"]["recall"]
    return figures
