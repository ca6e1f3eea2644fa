"""The Alpaca prompt template, shared by instruction tuning, sampling and chat."""

from __future__ import annotations

PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)


def format_prompt(instruction: str, input: str = "") -> str:
    """The Alpaca prompt; the `### Input:` block is left out when `input` is empty."""
    text = f"{PREAMBLE}\n\n### Instruction:\n{instruction}\n\n"
    if input:
        text += f"### Input:\n{input}\n\n"
    return text + "### Response:\n"
