"""Fine-tuning data: instruction records (Alpaca format) and labelled texts.

Everything here is deterministic for a given seed and free of model code: reading and
checking the raw files, splitting, tokenising, and collating into padded tensors for the
training loop (gptpipe.training), plus the metrics of a classifier.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tiktoken
import torch
import torch.nn.functional as F
from torch import nn

from gptpipe.checkpoint import load_model
from gptpipe.errors import BadInput, ConfigError
from gptpipe.model import GPT
from gptpipe.tokenizer import load_tokenizer

IGNORE = -100  # target id the loss skips

PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)


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


def load_base(base: Path, device: torch.device) -> tuple[GPT, tiktoken.Encoding]:
    """The base language model and its tokenizer, from a model folder."""
    model, info = load_model(base, device)
    if info.config.n_classes > 0:
        raise BadInput(f"{base}: is a classifier ({info.labels}), not a language model")
    return model, load_tokenizer(base)


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


# --------------------------------------------------------------------------- instructions


@dataclass(frozen=True)
class Instruction:
    instruction: str
    input: str
    output: str


def format_prompt(instruction: str, input: str = "") -> str:
    """The Alpaca prompt; the `### Input:` block is left out when `input` is empty."""
    text = f"{PREAMBLE}\n\n### Instruction:\n{instruction}\n\n"
    if input:
        text += f"### Input:\n{input}\n\n"
    return text + "### Response:\n"


def read_instructions(path: Path) -> list[Instruction]:
    """Read a JSON list of {"instruction", "input" (optional), "output"} records."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{path}: instruction data not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, list):
        raise BadInput(f"{path}: expected a JSON list of instruction records")
    records = []
    for i, item in enumerate(raw):
        ok = isinstance(item, dict) and all(
            isinstance(item.get(k, ""), str) for k in ("instruction", "input", "output")
        )
        if not ok or not item.get("instruction") or "output" not in item:
            raise BadInput(
                f"{path}: record {i} needs string fields 'instruction' and 'output' "
                "(and optionally 'input')"
            )
        records.append(Instruction(item["instruction"], item.get("input", ""), item["output"]))
    if len(records) < 2:
        raise BadInput(f"{path}: needs at least 2 records (one to train, one to validate)")
    return records


class InstructionExample(NamedTuple):
    """One tokenised record: model input, targets (IGNORE on the prompt), and whether it
    had to be cut to fit."""

    inputs: list[int]
    targets: list[int]
    truncated: bool


def tokenize_instruction(
    enc: tiktoken.Encoding, record: Instruction, eot: int, max_length: int
) -> InstructionExample:
    """Tokenise prompt + response + `<|endoftext|>` for next-token training.

    The model reads at most `max_length` tokens and learns only the response and its closing
    `<|endoftext|>`: targets of positions that predict prompt tokens are IGNORE. When the
    record is too long, the response keeps the room the prompt leaves, but at least half of
    it, and the prompt is cut from the left (its preamble goes first, `### Response:` stays
    next to the response). So every record keeps some response to learn, even in a context
    shorter than the prompt template.
    """
    prompt = encode(enc, format_prompt(record.instruction, record.input))
    response = [*encode(enc, record.output), eot]
    budget = max_length + 1  # inputs and targets are the ids shifted by one
    truncated = len(prompt) + len(response) > budget
    if truncated:
        keep = min(len(response), max(budget - len(prompt), budget // 2))
        response = response[:keep]
        prompt = prompt[len(prompt) - (budget - keep) :]
    ids = prompt + response
    n_prompt_targets = len(prompt) - 1  # positions whose next token is still the prompt
    targets = [IGNORE] * n_prompt_targets + ids[len(prompt) :]
    return InstructionExample(ids[:-1], targets, truncated)


def collate_instructions(
    examples: Sequence[InstructionExample | tuple[list[int], list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest example: inputs with `pad_id`, targets with IGNORE."""
    width = max(len(example[0]) for example in examples)
    x = torch.full((len(examples), width), pad_id, dtype=torch.long)
    y = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, example in enumerate(examples):
        inputs, targets = example[0], example[1]
        x[row, : len(inputs)] = torch.tensor(inputs, dtype=torch.long)
        y[row, : len(targets)] = torch.tensor(targets, dtype=torch.long)
    return x, y


def lm_loss(model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the targets that are not IGNORE, for training: the
    model's fused head + loss (no full logits; see gptpipe.model.linear_cross_entropy)."""
    x, y = batch
    _, loss = model(x, y, with_logits=False)
    return loss


def masked_lm_loss(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Token-weighted mean loss over whole batches (call under no_grad, eval mode)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits, _ = model(x)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(),
            y.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )
        total += float(loss)
        count += int((y != IGNORE).sum())
    return total / max(count, 1)


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


def stratified_split(
    labels: Sequence[int], val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices: each class is shuffled and cut in the same proportions,
    so every split keeps the class balance. Sorted within each split."""
    labels = np.asarray(labels)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = len(members)
        n_val, n_test = round(n * val_fraction), round(n * test_fraction)
        order = members[np.random.default_rng((seed, int(c))).permutation(n)]
        parts[0].append(order[n_val + n_test :])
        parts[1].append(order[:n_val])
        parts[2].append(order[n_val : n_val + n_test])
    train, val, test = (np.sort(np.concatenate(p)) for p in parts)
    return train, val, test


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


def classify_loss(model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    x, lengths, labels = batch
    return F.cross_entropy(model.classify(x, lengths).float(), labels)


def classify_metrics(
    model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
) -> tuple[float, float]:
    """(mean loss, accuracy) over whole batches (call under no_grad, eval mode)."""
    device = next(model.parameters()).device
    total, correct, count = 0.0, 0, 0
    for batch in batches:
        x, lengths, labels = (t.to(device) for t in batch)
        logits = model.classify(x, lengths).float()
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


def batches_of(
    examples: Sequence, batch_size: int, collate: Callable[[Sequence], tuple]
) -> list[tuple]:
    """All examples in order, in collated batches of `batch_size`."""
    return [collate(examples[s : s + batch_size]) for s in range(0, len(examples), batch_size)]
