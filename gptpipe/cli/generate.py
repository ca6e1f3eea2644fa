"""`gptpipe generate`: continue a prompt with a model folder, once or interactively."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, TextIO

import torch
import typer

from gptpipe import layout
from gptpipe.errors import BadInput
from gptpipe.generate.text import continue_text
from gptpipe.model.folder import load_language_model


def repl(
    lines: Iterable[str],
    respond: Callable[[str], str],
    out: TextIO,
    show_prompt: bool = False,
) -> int:
    """Answer each non-empty line read from `lines` until EOF; returns how many were answered."""
    answered = 0
    if show_prompt:
        print("> ", end="", file=sys.stderr, flush=True)
    for line in lines:
        prompt = line.rstrip("\n")
        if prompt.strip():
            print(respond(prompt), file=out, flush=True)
            answered += 1
        if show_prompt:
            print("> ", end="", file=sys.stderr, flush=True)
    return answered


def command(
    model: Annotated[Path, typer.Option(help="Model folder (language model).")] = layout.BASE,
    prompt: Annotated[
        str | None,
        typer.Option(help="Text to continue. Without it: a session on a TTY, else all of stdin."),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate at most.")] = 64,
    temperature: Annotated[
        float, typer.Option(min=0.0, help="Softmax temperature; 0 is greedy (deterministic).")
    ] = 0.8,
    top_k: Annotated[
        int, typer.Option(min=0, help="Sample among the k most likely tokens (0: all).")
    ] = 40,
    seed: Annotated[int, typer.Option(help="Sampling seed (same seed, same text).")] = 1337,
    instruct: Annotated[
        bool, typer.Option(help="Wrap the prompt as an Alpaca instruction (instruct models).")
    ] = False,
    input: Annotated[
        str, typer.Option("--input", help="With --instruct: the instruction's input text.")
    ] = "",
    interactive: Annotated[
        bool, typer.Option(help="Read one prompt per line from stdin until EOF.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Continue a prompt and print only the new text on stdout (stops at <|endoftext|>)."""
    if input and not instruct:
        raise BadInput("--input is part of an instruction: use it with --instruct")
    lm, encoding = load_language_model(model, device)
    generator = torch.Generator(device="cpu").manual_seed(seed)

    def respond(text: str) -> str:
        return continue_text(
            lm, encoding, text, max_new_tokens, temperature, top_k, generator, instruct, input
        )

    if interactive or (prompt is None and sys.stdin.isatty()):
        if prompt is not None:
            print(respond(prompt), flush=True)
        tty = sys.stdin.isatty()
        if tty:
            print("Type a prompt per line; Ctrl-D ends.", file=sys.stderr)
        repl(sys.stdin, respond, sys.stdout, show_prompt=tty)
        return
    print(respond(prompt if prompt is not None else sys.stdin.read()))
