"""`gptpipe chat`: an interactive session with a model folder, for people at a terminal.

An instruction-tuned folder (config.json meta: stage instruct) answers each line as an
Alpaca instruction (one turn per line: the template has no dialogue). A base model
continues the session's text: each line is appended to what was said so far (kept to the
context's length) and the model carries on. Lines starting with `/` change the decoding
settings (gptpipe.decoding's, checked as every entry point checks them). Ctrl-C stops the
current answer and keeps the session; an answer that fails (sampling from a diverged model's
logits, say) is one line, and the session and its conversation go on; Ctrl-D ends it.
"""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TextIO

import tiktoken
import torch
import typer

from gptpipe import default_paths
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
from gptpipe.decoding import CHAT, FIELDS, Decoding, parse
from gptpipe.errors import BadInput
from gptpipe.generate.decode import for_decoding
from gptpipe.generate.text import context_ids, stream
from gptpipe.model.folder import is_instruct, load_language_model, read_info
from gptpipe.model.gpt import GPT
from gptpipe.prompts import format_prompt

# The decoding settings a /command changes (`/temperature 0`), each by its gptpipe.decoding
# name; /seed starts the sampler afresh from that seed.
SETTINGS = ("temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "seed")
# Other spellings of a /command: /max_tokens was max_new_tokens' chat name (OpenAI's word).
ALIASES = {"max_tokens": "max_new_tokens"}
_COLUMN, _WIDTH = 30, 100  # where /help's explanations start, and its lines' width


def _help() -> str:
    """/help's text: the /commands, each setting's with its help from gptpipe.decoding."""
    rows = [(f"/{name} VALUE", FIELDS[name].help) for name in SETTINGS]
    rows += [(f"/{alias} VALUE", f"the same as /{name}") for alias, name in ALIASES.items()]
    rows += [
        ("/settings", "show the current settings"),
        ("/reset", "forget the conversation so far"),
        ("/help", "this list"),
    ]
    lines = ["commands:"]
    for left, right in rows:
        first = f"  {left:<{_COLUMN - 2}}{right}"
        lines.append(textwrap.fill(first, _WIDTH, subsequent_indent=" " * _COLUMN))
    return "\n".join([*lines, "Ctrl-C stops an answer; Ctrl-D ends the session."])


HELP = _help()


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
            print(", ".join(f"{n} {self.setting(n)}" for n in SETTINGS), file=err)
        elif ALIASES.get(name, name) in SETTINGS:
            self.change(ALIASES.get(name, name), value, f"/{name}", err)
        else:
            print(f"unknown command /{name}: /help lists them", file=err)

    def setting(self, name: str) -> object:
        """The current value of one of `SETTINGS`."""
        if name == "seed":
            return self.generator.initial_seed()
        return getattr(self.decoding, name)

    def change(self, name: str, text: str, command: str, err: TextIO) -> None:
        """Set one of `SETTINGS` from its /command's text (checked by gptpipe.decoding); a
        value out of range is one line naming the /command, and nothing changes."""
        try:
            value = parse(name, text, lambda _: command)
        except BadInput as exc:
            print(exc, file=err)
            return
        if name == "seed":
            self.generator.manual_seed(value)
        else:
            self.decoding = dataclasses.replace(self.decoding, **{name: value})
        print(f"({name} = {value})", file=err)

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
        except Exception as exc:  # no failure of one answer ends the session
            print(f"(could not answer: {failure(exc)})", file=err, flush=True)


def failure(exc: Exception) -> str:
    """One line saying why an answer failed, and that the session goes on. Sampling fails
    on logits that are not numbers (a diverged model's), and on running out of memory."""
    reason = " ".join(str(exc).split()) or "no message"
    return (
        f"{type(exc).__name__}: {reason}; the conversation is kept: go on, change a setting "
        "or /reset"
    )


def _read_line() -> str:
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line


def command(
    model: Annotated[
        Path, typer.Option(help="Model folder (an instruction-tuned one, or a base model).")
    ] = default_paths.INSTRUCT_MODEL,
    max_new_tokens: MaxNewTokens = CHAT["max_new_tokens"],
    temperature: Temperature = CHAT["temperature"],
    top_k: TopK = CHAT["top_k"],
    top_p: TopP = CHAT["top_p"],
    repetition_penalty: RepetitionPenalty = CHAT["repetition_penalty"],
    seed: Seed = CHAT["seed"],
    stop: Stop = None,
    device: Device = "auto",
    dtype: DType = "auto",
) -> None:
    """Chat with a model: an instruction-tuned folder answers each line, a base model
    continues the conversation's text. /help lists the commands."""
    decoding = checked(
        {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "repetition_penalty": repetition_penalty,
            "stop": tuple(stop or ()),
            "seed": seed,
        }
    )
    lm, encoding = load_language_model(model, device)
    lm = for_decoding(lm, dtype)
    instruct = is_instruct(model, read_info(model))
    generator = torch.Generator(device="cpu").manual_seed(seed)
    session = Session(lm, encoding, decoding, instruct, generator)
    run_session(session, _read_line, sys.stdout, sys.stderr)
