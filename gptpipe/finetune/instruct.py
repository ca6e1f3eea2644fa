"""Instruction data for fine-tuning (Alpaca records): tokenising prompt + response with the
prompt masked from the loss, and collating padded batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import tiktoken
import torch

from gptpipe.errors import BadInput
from gptpipe.finetune.batches import encode
from gptpipe.prompts import format_prompt
from gptpipe.sources.formats import decode_text, parse_instructions
from gptpipe.train.losses import IGNORE

# --------------------------------------------------------------------------- instructions


@dataclass(frozen=True)
class Instruction:
    instruction: str
    input: str
    output: str


def read_instructions(path: Path) -> list[Instruction]:
    """The records of an instruction file, read by the formats module's reader (a JSON list,
    as the download stage writes it, or JSON Lines); at least 2 records."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path}: instruction data not found") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a folder, not an instruction file") from None
    rows = parse_instructions(decode_text(data, str(path)), str(path))
    if len(rows) < 2:
        raise BadInput(f"{path}: needs at least 2 records (one to train, one to validate)")
    return [Instruction(r["instruction"], r["input"], r["output"]) for r in rows]


class InstructionExample(NamedTuple):
    """One tokenised record: model input, targets (IGNORE on the prompt), and whether it
    had to be cut to fit."""

    inputs: list[int]
    targets: list[int]
    truncated: bool


def tokenize_instruction(
    enc: tiktoken.Encoding,
    record: Instruction,
    eot: int,
    max_length: int,
    mask_prompt: bool = True,
) -> InstructionExample:
    """Tokenise prompt + response + `<|endoftext|>` for next-token training.

    The model reads at most `max_length` tokens and learns the response and its closing
    `<|endoftext|>`; with `mask_prompt`, targets of positions that predict prompt tokens are
    IGNORE (else the prompt is learnt too, as the book's main recipe does). When the
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
    if not mask_prompt:
        return InstructionExample(ids[:-1], ids[1:], truncated)
    n_prompt_targets = len(prompt) - 1  # positions whose next token is still the prompt
    targets = [IGNORE] * n_prompt_targets + ids[len(prompt) :]
    return InstructionExample(ids[:-1], targets, truncated)


def collate_instructions(
    examples: Sequence[InstructionExample | tuple[list[int], list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest example: inputs with `pad_id` (`<|endoftext|>`), targets with
    IGNORE. Each example's own closing `<|endoftext|>` is its last target, so the first
    end-of-text stays a target and all the padding after it is masked (the book's collate)."""
    width = max(len(example[0]) for example in examples)
    x = torch.full((len(examples), width), pad_id, dtype=torch.long)
    y = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, example in enumerate(examples):
        inputs, targets = example[0], example[1]
        x[row, : len(inputs)] = torch.tensor(inputs, dtype=torch.long)
        y[row, : len(targets)] = torch.tensor(targets, dtype=torch.long)
    return x, y


# --------------------------------------------------------------------------- scoring


def normalise_answer(text: str) -> str:
    """An answer as exact match compares it: whitespace runs as one space, stripped."""
    return " ".join(text.split())


def exact_match(response: str, reference: str) -> bool:
    return normalise_answer(response) == normalise_answer(reference)


class RougeL:
    """ROUGE-L F-measure by Google's `rouge-score` (tokens: lower-cased alphanumeric runs,
    Porter stemming as in the original ROUGE)."""

    def __init__(self) -> None:
        from rouge_score import rouge_scorer  # imported on use: it pulls in nltk

        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def __call__(self, response: str, reference: str) -> float:
        return float(self._scorer.score(reference, response)["rougeL"].fmeasure)
