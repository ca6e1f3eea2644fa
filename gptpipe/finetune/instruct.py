"""Instruction data for fine-tuning (Alpaca records): tokenising prompt + response with the
prompt masked from the loss, and collating padded batches.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import tiktoken
import torch

from gptpipe.errors import BadInput
from gptpipe.finetune.batches import encode
from gptpipe.prompts import format_prompt
from gptpipe.train.losses import IGNORE

# --------------------------------------------------------------------------- instructions


@dataclass(frozen=True)
class Instruction:
    instruction: str
    input: str
    output: str


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
