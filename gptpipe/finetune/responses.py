"""How an instruction-tuned model is scored: its losses over whole splits and its greedy
responses to the test instructions, each with a progress bar (minutes at full size), and the
responses compared with the references (ROUGE-L, exact match), the tuned model beside the
untuned base it started from.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tiktoken
import torch

from gptpipe.finetune.batches import encode
from gptpipe.finetune.instruct import Instruction, RougeL, exact_match
from gptpipe.generate.decode import Decoding, generate_many
from gptpipe.model.gpt import GPT
from gptpipe.progress import progress
from gptpipe.prompts import format_prompt
from gptpipe.train.losses import masked_lm_loss
from gptpipe.train.precision import evaluating

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Scoring:
    """How the responses are scored: the run's autocast dtype, the tokens each greedy
    response may have, the prompts decoded at a time, and the id that ends a response."""

    dtype: str
    max_new_tokens: int
    batch_size: int
    eot: int


def respond(
    model: GPT,
    enc: tiktoken.Encoding,
    records: Sequence[Instruction],
    scoring: Scoring,
    advance: Callable[[int], object] | None = None,
) -> list[str]:
    """Greedy responses to `records` in the Alpaca prompt format, up to `max_new_tokens` each,
    ending before <|endoftext|>: on the KV cache, `batch_size` prompts at a time. At the
    context's end the window slides by one token, so that every response is the one a full
    forward over the last block_size tokens per step gives (the cache is rebuilt then).
    `advance` is called with the number of records each batch answered."""
    prompts = [encode(enc, format_prompt(r.instruction, r.input)) for r in records]
    decoding = Decoding(max_new_tokens=scoring.max_new_tokens, slide=1)
    stop = (scoring.eot,)
    new = generate_many(
        model, prompts, decoding, stop_ids=stop, batch_size=scoring.batch_size, advance=advance
    )
    return [enc.decode(ids).strip() for ids in new]


def scored(
    model: GPT,
    enc: tiktoken.Encoding,
    splits: Mapping[str, Batches],
    records: Sequence[Instruction],
    scoring: Scoring,
    label: str,
) -> tuple[dict[str, float], list[str]]:
    """The model's loss over each split's whole batches and its greedy responses to the test
    `records`, in eval mode under the run's dtype. Each step has a progress bar on stderr
    (`label`: which model, e.g. "score base: test responses 12/55")."""
    with evaluating(model, scoring.dtype), progress() as bar:
        losses = {
            name: masked_lm_loss(model, bar.track(batches, description=f"{label}: {name} loss"))
            for name, batches in splits.items()
        }
        task = bar.add_task(f"{label}: test responses", total=len(records))
        advance = functools.partial(bar.advance, task)
        responses = respond(model, enc, records, scoring, advance=advance)
    return losses, responses


def compared(
    records: Sequence[Instruction], responses: Sequence[str], base_responses: Sequence[str]
) -> list[dict[str, Any]]:
    """Each test record with the tuned and the base model's response and their ROUGE-L and
    exact match against the reference (what responses.json holds)."""
    rouge = RougeL()
    return [
        {
            "instruction": record.instruction,
            "input": record.input,
            "reference": record.output,
            "response": response,
            "base_response": base_response,
            "rougeL": rouge(response, record.output),
            "exact": exact_match(response, record.output),
            "base_rougeL": rouge(base_response, record.output),
            "base_exact": exact_match(base_response, record.output),
        }
        for record, response, base_response in zip(records, responses, base_responses, strict=True)
    ]


def answer_scores(answers: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The means over the test answers: ROUGE-L and exact match, tuned and base."""
    n = len(answers)
    return {
        "test_rougeL": sum(a["rougeL"] for a in answers) / n,
        "base_test_rougeL": sum(a["base_rougeL"] for a in answers) / n,
        "test_exact": sum(a["exact"] for a in answers) / n,
        "base_test_exact": sum(a["base_exact"] for a in answers) / n,
    }
