"""Text in, text out: prompts as ids and continuations decoded back to text."""

from __future__ import annotations

import tiktoken
import torch

from gptpipe.generate.decode import generate
from gptpipe.model.gpt import GPT
from gptpipe.prompts import format_prompt
from gptpipe.tokenizer.folder import eot_id


def continue_text(
    model: GPT,
    encoding: tiktoken.Encoding,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    instruct: bool = False,
    input: str = "",
) -> str:
    """The new text after `prompt` (Alpaca-wrapped with `instruct`), up to <|endoftext|>.

    An empty prompt starts from <|endoftext|>, i.e. the start of a new document.
    """
    text = format_prompt(prompt, input) if instruct else prompt
    stop = eot_id(encoding)
    ids = encoding.encode_ordinary(text) or [stop]
    new = generate(
        model,
        ids,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        stop_id=stop,
        generator=generator,
    )
    return encoding.decode(new)


def prompt_ids(encoding: tiktoken.Encoding, text: str) -> list[int]:
    """User text as ids; an empty prompt starts from `<|endoftext|>` (unconditional text)."""
    return encoding.encode_ordinary(text) or [eot_id(encoding)]
