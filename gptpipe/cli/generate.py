"""`gptpipe generate`: continue a prompt with a model folder, streamed to stdout as produced."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, TextIO

import torch
import typer

from gptpipe import layout
from gptpipe.errors import BadInput
from gptpipe.generate.decode import Decoding, for_decoding, problems
from gptpipe.generate.text import context_ids, stream
from gptpipe.model.folder import is_instruct, load_language_model, read_info
from gptpipe.prompts import format_prompt

# The options every decoding command shares (generate, chat), with their defaults.
MaxNewTokens = Annotated[int, typer.Option(min=1, help="Tokens to generate at most.")]
Temperature = Annotated[
    float, typer.Option(help="Softmax temperature (>= 0); 0 is greedy (deterministic).")
]
TopK = Annotated[int, typer.Option(help="Sample among the k most likely tokens (0: all).")]
TopP = Annotated[
    float, typer.Option(help="Nucleus: sample among the most likely tokens of mass p, in (0, 1].")
]
RepetitionPenalty = Annotated[
    float, typer.Option(help="> 1 discourages tokens already in the text (1: off).")
]
Seed = Annotated[int, typer.Option(help="Sampling seed (same seed, same text).")]
NumBeams = Annotated[int, typer.Option(help="Beam search with this many beams (1: off).")]
LengthPenalty = Annotated[
    float, typer.Option(help="Beam search: > 0 favours longer continuations, < 0 shorter.")
]
Stop = Annotated[
    list[str] | None,
    typer.Option(
        "--stop",
        help="Stop when this text appears (repeatable; not printed). Taken as typed, no escapes "
        "read: \"\\n\" is a backslash and an n; in bash give newlines as $'\\n\\n'.",
    ),
]
Slide = Annotated[
    int,
    typer.Option(
        help="Tokens dropped from the window when the context fills, so that generation goes "
        "on past it (the cache is rebuilt); 0: a quarter of the context."
    ),
]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
DType = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="Weights and cache while decoding: auto (bfloat16 where the device computes it "
        "natively, else float32), float32 or bfloat16.",
    ),
]

OPTION = {  # Decoding field -> the option that sets it
    "max_new_tokens": "--max-new-tokens",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "repetition_penalty": "--repetition-penalty",
    "num_beams": "--num-beams",
    "length_penalty": "--length-penalty",
    "stop": "--stop",
    "slide": "--slide",
}


def checked(decoding: Decoding) -> Decoding:
    """The setting, or BadInput naming the option of its first wrong field."""
    for name, message in problems(decoding):
        raise BadInput(f"{OPTION.get(name, name)}: {message}")
    return decoding


def write_stream(pieces: Iterator[str], out: TextIO) -> str:
    """Print each piece as it comes (flushed); returns the whole text."""
    text = ""
    for piece in pieces:
        out.write(piece)
        out.flush()
        text += piece
    return text


def repl(
    lines: Iterable[str],
    respond: Callable[[str], None],
    show_prompt: bool = False,
) -> int:
    """Answer each non-empty line read from `lines` until EOF; returns how many were answered."""
    answered = 0
    if show_prompt:
        print("> ", end="", file=sys.stderr, flush=True)
    for line in lines:
        prompt = line.rstrip("\n")
        if prompt.strip():
            respond(prompt)
            answered += 1
        if show_prompt:
            print("> ", end="", file=sys.stderr, flush=True)
    return answered


def command(
    model: Annotated[Path, typer.Option(help="Model folder (language model).")] = layout.BASE,
    prompt: Annotated[
        str | None,
        typer.Option(help="Text to continue ('' starts a new document). Without it: stdin."),
    ] = None,
    max_new_tokens: MaxNewTokens = 64,
    temperature: Temperature = 0.8,
    top_k: TopK = 40,
    top_p: TopP = 1.0,
    repetition_penalty: RepetitionPenalty = 1.0,
    seed: Seed = 1337,
    num_samples: Annotated[int, typer.Option(help="Continuations to draw from the prompt.")] = 1,
    num_beams: NumBeams = 1,
    length_penalty: LengthPenalty = 1.0,
    stop: Stop = None,
    slide: Slide = 0,
    instruct: Annotated[
        bool | None,
        typer.Option(
            "--instruct/--raw",
            help="Wrap the prompt as an Alpaca instruction, or not. Default: wrap when the "
            "folder is instruction-tuned.",
            show_default=False,
        ),
    ] = None,
    input: Annotated[
        str, typer.Option("--input", help="With an instruction: the instruction's input text.")
    ] = "",
    interactive: Annotated[
        bool, typer.Option(help="Read one prompt per line from stdin until EOF.")
    ] = False,
    device: Device = "auto",
    dtype: DType = "auto",
) -> None:
    """Continue a prompt and stream only the new text to stdout (stops at <|endoftext|>)."""
    decoding = checked(
        Decoding(
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            num_beams,
            length_penalty,
            tuple(stop or ()),
            slide,
        )
    )
    if num_samples < 1:
        raise BadInput(f"--num-samples: must be >= 1, not {num_samples}")
    lm, encoding = load_language_model(model, device)
    lm = for_decoding(lm, dtype)
    wrap = is_instruct(model, read_info(model)) if instruct is None else instruct
    if input and not wrap:
        raise BadInput("--input is part of an instruction: use it with --instruct")
    generator = torch.Generator(device="cpu").manual_seed(seed)

    def respond(text: str) -> None:
        ids = context_ids(lm, encoding, format_prompt(text, input) if wrap else text)
        for number in range(num_samples):
            if number:
                print(f"--- sample {number + 1}", file=sys.stderr, flush=True)
            write_stream(stream(lm, encoding, ids, decoding, generator), sys.stdout)
            print(flush=True)

    if interactive or (prompt is None and sys.stdin.isatty()):
        if prompt is not None:
            respond(prompt)
        tty = sys.stdin.isatty()
        if tty:
            print("Type a prompt per line; Ctrl-D ends.", file=sys.stderr)
        repl(sys.stdin, respond, show_prompt=tty)
        return
    respond(prompt if prompt is not None else sys.stdin.read())
