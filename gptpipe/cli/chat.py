"""`gptpipe chat`: an interactive session with a model folder, for people at a terminal.

An instruction-tuned folder (config.json meta: stage instruct) answers each line as an
Alpaca instruction (one turn per line: the template has no dialogue). A base model
continues the session's text: each line is appended to what was said so far (kept to the
context's length) and the model carries on. Lines starting with `/` change the decoding
settings. Ctrl-C stops the current answer and keeps the session; Ctrl-D ends it.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TextIO

import tiktoken
import torch
import typer

from gptpipe import layout
from gptpipe.cli.generate import (
    Device,
    DType,
    MaxNewTokens,
    RepetitionPenalty,
    Seed,
    Stop,
    Temperature,
    TopK,
    TopP,
    checked,
)
from gptpipe.generate.decode import Decoding, for_decoding, problems
from gptpipe.generate.text import context_ids, stream
from gptpipe.model.folder import is_instruct, load_language_model, read_info
from gptpipe.model.gpt import GPT
from gptpipe.prompts import format_prompt

# /command -> (Decoding field, parser)
SETTINGS: dict[str, tuple[str, Callable[[str], object]]] = {
    "temperature": ("temperature", float),
    "top_p": ("top_p", float),
    "top_k": ("top_k", int),
    "max_tokens": ("max_new_tokens", int),
    "repetition_penalty": ("repetition_penalty", float),
}
HELP = """commands:
  /temperature T         0 is greedy; higher is more random
  /top_p P               nucleus sampling, P in (0, 1] (1: off)
  /top_k K               sample among the K most likely tokens (0: off)
  /max_tokens N          tokens per answer at most
  /repetition_penalty R  > 1 discourages repeats (1: off)
  /settings              show the current settings
  /reset                 forget the conversation so far
  /help                  this list
Ctrl-C stops an answer; Ctrl-D ends the session."""


class Session:
    """The state of one chat: the model, its settings, and (base models) the text so far."""

    def __init__(
        self,
        model: GPT,
        encoding: tiktoken.Encoding,
        decoding: Decoding,
        instruct: bool,
        generator: torch.Generator,
    ) -> None:
        self.model, self.encoding, self.decoding = model, encoding, decoding
        self.instruct, self.generator = instruct, generator
        self.transcript = ""  # base models: everything said so far

    def command(self, line: str, err: TextIO) -> None:
        """Apply one /command; a bad one is explained, the session goes on."""
        name, _, value = line[1:].strip().partition(" ")
        value = value.strip()
        if name == "help":
            print(HELP, file=err)
        elif name == "reset":
            self.transcript = ""
            print("(conversation reset)", file=err)
        elif name == "settings":
            d = self.decoding
            print(
                f"temperature {d.temperature}, top_p {d.top_p}, top_k {d.top_k}, "
                f"max_tokens {d.max_new_tokens}, repetition_penalty {d.repetition_penalty}",
                file=err,
            )
        elif name in SETTINGS:
            field, parse = SETTINGS[name]
            try:
                changed = dataclasses.replace(self.decoding, **{field: parse(value)})  # type: ignore[arg-type]
            except ValueError:
                print(f"/{name}: expected a number, got {value!r}", file=err)
                return
            wrong = problems(changed)
            if wrong:
                print(f"/{name}: {wrong[0][1]}", file=err)
                return
            self.decoding = changed
            print(f"({name} = {getattr(changed, field)})", file=err)
        else:
            print(f"unknown command /{name}: /help lists them", file=err)

    def answer(self, line: str, out: TextIO) -> None:
        """Stream the answer to `line`; Ctrl-C (KeyboardInterrupt) ends it early, keeping
        what was said."""
        if self.instruct:
            text = format_prompt(line)
        else:
            self.transcript += line if not self.transcript else "\n" + line
            text = self.transcript
        ids = context_ids(self.model, self.encoding, text, warn=False)
        try:
            for piece in stream(self.model, self.encoding, ids, self.decoding, self.generator):
                out.write(piece)
                out.flush()
                if not self.instruct:
                    self.transcript += piece
        finally:
            out.write("\n")
            out.flush()


def run_session(session: Session, read: Callable[[], str], out: TextIO, err: TextIO) -> int:
    """Read lines until end of input; returns the number of answers given."""
    kind = (
        "instruction-tuned: each line is an instruction"
        if session.instruct
        else ("base model: it continues the text")
    )
    print(f"({kind}; /help for commands, Ctrl-C stops an answer, Ctrl-D ends)", file=err)
    answers = 0
    while True:
        print("> ", end="", file=err, flush=True)
        try:
            line = read()
        except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh line
            print(file=err)
            continue
        except EOFError:
            print(file=err)
            return answers
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if line.startswith("/"):
            session.command(line, err)
            continue
        try:
            session.answer(line, out)
            answers += 1
        except KeyboardInterrupt:
            print("(stopped)", file=err, flush=True)


def _read_line() -> str:
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line


def command(
    model: Annotated[
        Path, typer.Option(help="Model folder (an instruction-tuned one, or a base model).")
    ] = layout.INSTRUCT_MODEL,
    max_new_tokens: MaxNewTokens = 200,
    temperature: Temperature = 0.7,
    top_k: TopK = 40,
    top_p: TopP = 0.95,
    repetition_penalty: RepetitionPenalty = 1.1,
    seed: Seed = 1337,
    stop: Stop = None,
    device: Device = "auto",
    dtype: DType = "auto",
) -> None:
    """Chat with a model: an instruction-tuned folder answers each line, a base model
    continues the conversation's text. /help lists the commands."""
    decoding = checked(
        Decoding(
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            stop=tuple(stop or ()),
        )
    )
    lm, encoding = load_language_model(model, device)
    lm = for_decoding(lm, dtype)
    instruct = is_instruct(model, read_info(model))
    generator = torch.Generator(device="cpu").manual_seed(seed)
    session = Session(lm, encoding, decoding, instruct, generator)
    run_session(session, _read_line, sys.stdout, sys.stderr)
