"""Decoding settings at every entry point: the same value gets the same answer everywhere.

One row per (setting, value); each entry point that takes the setting (params.yaml's sample
section and its sample.decoding entries through `gptpipe sample -S`, the options of
`gptpipe generate` and `gptpipe chat`, chat's /commands, `Decoding` and
`gptpipe.decoding.check` directly) must accept it or refuse it as the row says. A command
line refusal is exit 2 with one line naming that entry point's name for the setting; a chat
/command refusal is one line naming the /command, and the session goes on. An accepted value
passes the settings and reaches the next thing the command does: reading a model folder (or
data) that is not there, so no model runs. (instruct.max_new_tokens, the length of the
instruction-tuned model's test responses, is a decoding setting too.)
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.faults import cli, expect_bad_input

from gptpipe import decoding
from gptpipe.cli.chat import Session
from gptpipe.decoding import check
from gptpipe.errors import BadInput
from gptpipe.generate.decode import Decoding
from gptpipe.model.folder import load_language_model

# The documented bounds (README, --help): held here as the contract, and equal to the module's.
FLOOR = 1e-4  # the lowest positive temperature
MAX_NEW_TOKENS = 1_000_000
MAX_SEED = 2**63 - 1
NAN, INF = float("nan"), float("inf")

# (case id, setting, value, accepted)
VALUES: list[tuple[str, str, Any, bool]] = [
    ("greedy", "temperature", 0.0, True),
    ("one", "temperature", 1.0, True),
    ("smallest-float32", "temperature", 1e-45, False),
    ("1e-40", "temperature", 1e-40, False),
    ("1e-37", "temperature", 1e-37, False),
    ("below-floor", "temperature", math.nextafter(FLOOR, 0.0), False),
    ("floor", "temperature", FLOOR, True),
    ("above-floor", "temperature", math.nextafter(FLOOR, 1.0), True),
    ("negative", "temperature", -1.0, False),
    ("nan", "temperature", NAN, False),
    ("inf", "temperature", INF, False),
    ("zero", "top_p", 0.0, False),
    ("one", "top_p", 1.0, True),
    ("above-one", "top_p", 1.5, False),
    ("nan", "top_p", NAN, False),
    ("negative", "top_k", -1, False),
    ("zero", "top_k", 0, True),
    ("zero", "num_beams", 0, False),
    ("one", "num_beams", 1, True),
    ("zero", "max_new_tokens", 0, False),
    ("bound", "max_new_tokens", MAX_NEW_TOKENS, True),
    ("above-bound", "max_new_tokens", MAX_NEW_TOKENS + 1, False),
    ("negative", "seed", -1, False),
    ("zero", "seed", 0, True),
    ("largest", "seed", MAX_SEED, True),
    ("2**63", "seed", MAX_SEED + 1, False),
    ("2**64", "seed", 2**64, False),
    ("zero", "repetition_penalty", 0.0, False),
    ("inf", "repetition_penalty", INF, False),
    ("one", "repetition_penalty", 1.0, True),
    ("inf", "length_penalty", INF, False),
    ("negative", "length_penalty", -1.0, True),
    ("negative", "slide", -1, False),
    ("zero", "slide", 0, True),
    ("negative", "num_samples", -1, False),
    ("one", "num_samples", 1, True),
    ("empty", "stop", "", False),
    ("text", "stop", "\n\n", True),
]


def as_text(value: Any) -> str:
    """A value as typed on a command line or after a chat /command."""
    return value if isinstance(value, str) else str(value)


def as_yaml(value: Any) -> str:
    """A value in YAML, as `-S` takes it."""
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    return repr(value)


# ----------------------------------------------------------------------------- entry points


# How an entry point answered a value: None when it accepted it, else its one line.
Answer = str | None
# Try a value: (setting, value, the entry point's name for the setting, tmp folder, session).
Attempt = Callable[[str, Any, str, Path, Session], Answer]


@dataclass(frozen=True)
class EntryPoint:
    """An entry point: the settings it takes, its name for each, and how to try a value."""

    id: str
    settings: tuple[str, ...]
    name: Callable[[str], str]
    attempt: Attempt


def command_line(result: Any, name: str, missing: Path) -> Answer:
    """A command's answer: refused (exit 2, one line naming `name`) or accepted (it went on to
    read the `missing` folder)."""
    line = expect_bad_input(result)
    if str(missing) in line:
        return None
    return expect_bad_input(result, name)


def option(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def params(command: list[str]) -> Attempt:
    """`gptpipe COMMAND -S KEY=VALUE` (for sample.decoding[1].KEY: the entries of
    sample.decoding with it in the second) on folders that are not there."""

    def attempt(setting: str, value: Any, key: str, tmp: Path, _: Session) -> Answer:
        file, missing = tmp / "params.yaml", tmp / "missing"
        file.write_text("{}\n", encoding="utf-8")
        text = as_yaml(value)
        if key.startswith("sample.decoding"):
            item = f"[{text}]" if setting == "stop" else text
            text = f"[{{name: a}}, {{name: b, {setting}: {item}}}]"
        args = [*command, "--params", file, "-S", f"{key.split('[')[0]}={text}"]
        folders = ["--model"] if command == ["sample"] else ["--base", missing, "--data"]
        return command_line(cli([*args, *folders, missing], tmp), key, missing)

    return attempt


def options(command: list[str]) -> Attempt:
    """`gptpipe COMMAND --OPTION VALUE` on a model folder that is not there."""

    def attempt(setting: str, value: Any, name: str, tmp: Path, _: Session) -> Answer:
        missing = tmp / "missing"
        args = [*command, "--model", missing, name, as_text(value)]
        return command_line(cli(args, tmp), name, missing)

    return attempt


def chat_command(setting: str, value: Any, name: str, tmp: Path, session: Session) -> Answer:
    """`/SETTING VALUE` in a chat session: one line, and a refused value changes nothing."""
    before = session.decoding, session.generator.initial_seed()
    err = io.StringIO()
    session.command(f"{name} {as_text(value)}", err)
    lines = err.getvalue().splitlines()
    assert len(lines) == 1, lines
    if lines[0].startswith(f"({setting} = "):
        return None
    assert lines[0].startswith(f"{name}: "), lines
    assert (session.decoding, session.generator.initial_seed()) == before
    return lines[0]


def library(call: Callable[[str, Any], object]) -> Attempt:
    """A library call's answer: None when it returned, else its BadInput's one line."""

    def attempt(setting: str, value: Any, name: str, tmp: Path, _: Session) -> Answer:
        try:
            call(setting, (value,) if setting == "stop" else value)
        except BadInput as exc:
            assert "\n" not in str(exc), str(exc)
            return str(exc)
        return None

    return attempt


def build_decoding(setting: str, value: Any) -> object:
    return Decoding(**{setting: value})


def check_request(setting: str, value: Any) -> None:
    """`check` as a server would call it, naming a setting by its request key."""
    check({setting: value}, lambda field: f"request.{field}")


ALL = (
    "max_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "num_beams",
    "length_penalty",
    "stop",
    "slide",
    "num_samples",
    "seed",
)
SECTION = ("max_new_tokens", "temperature", "top_k", "num_samples", "seed")
CHAT = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed")
ENTRY_POINTS = [
    EntryPoint("params-section", SECTION, lambda s: f"sample.{s}", params(["sample"])),
    EntryPoint(
        "params-decoding", ALL[:-1], lambda s: f"sample.decoding[1].{s}", params(["sample"])
    ),  # every setting but the seed (the section's alone)
    EntryPoint(
        "params-instruct",
        ("max_new_tokens",),
        lambda s: f"instruct.{s}",
        params(["finetune", "instruct"]),
    ),
    EntryPoint("generate", ALL, option, options(["generate", "--prompt", "x"])),
    EntryPoint("chat", (*CHAT, "stop"), option, options(["chat"])),
    EntryPoint("chat-command", CHAT, lambda s: f"/{s}", chat_command),
    EntryPoint("chat-alias", ("max_new_tokens",), lambda s: "/max_tokens", chat_command),
    EntryPoint("Decoding", ALL[:9], str, library(build_decoding)),  # all but how many, seed
    EntryPoint("check", ALL, lambda s: f"request.{s}", library(check_request)),
]
CASES = [
    pytest.param(entry, setting, value, accepted, id=f"{entry.id}-{setting}-{case}")
    for entry in ENTRY_POINTS
    for case, setting, value, accepted in VALUES
    if setting in entry.settings
]


@pytest.fixture(scope="module")
def session(pipeline: dict[str, Path]) -> Session:
    """A chat session on the tiny model (its /commands change settings; nothing is sampled)."""
    model, encoding = load_language_model(pipeline["model"], "cpu")
    return Session(model, encoding, Decoding(), False, torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("entry", "setting", "value", "accepted"), CASES)
def test_every_entry_point_gives_the_same_answer(
    entry: EntryPoint, setting: str, value: Any, accepted: bool, tmp_path: Path, session: Session
) -> None:
    name = entry.name(setting)
    answer = entry.attempt(setting, value, name, tmp_path, session)
    if accepted:
        assert answer is None, answer
    else:
        assert answer is not None, f"{name} = {value!r} was accepted"
        assert name in answer, answer


def test_the_bounds_the_table_holds_are_the_modules() -> None:
    bounds = (decoding.MIN_TEMPERATURE, decoding.MAX_NEW_TOKENS, decoding.MAX_SEED)
    assert bounds == (FLOOR, MAX_NEW_TOKENS, MAX_SEED)
