"""gptpipe.decoding, the one home of the decoding settings: no torch, every entry point's
defaults and help come from it, and `check` reports a setting by the caller's name for it.
(That every entry point accepts and refuses the same values: tests/faults.)"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import typer

from gptpipe import decoding
from gptpipe.cli.app import app
from gptpipe.config import DecodingConfig, SampleConfig
from gptpipe.decoding import CHAT, FIELDS, GENERATE, LIBRARY, SAMPLE, Decoding, check, parse
from gptpipe.errors import BadInput, ConfigError


def test_it_imports_no_torch() -> None:
    """A server builds its request validation from it, and every stage reads config.py."""
    code = "import sys, gptpipe.decoding, gptpipe.config; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_decoding_holds_every_setting_but_how_many_and_from_which_seed() -> None:
    assert [f.name for f in dataclasses.fields(Decoding)] + ["num_samples", "seed"] == list(FIELDS)
    assert Decoding().values() == {k: v for k, v in LIBRARY.items() if k in Decoding().values()}


def option_defaults(command: str) -> dict[str, object]:
    """The defaults of a command's decoding options (`--stop` has none: no stop string)."""
    params = typer.main.get_command(app).commands[command].params  # type: ignore[attr-defined]
    return {p.name: p.default for p in params if p.name in FIELDS and p.name != "stop"}


@pytest.mark.parametrize(("command", "defaults"), [("generate", GENERATE), ("chat", CHAT)])
def test_command_options_take_their_defaults_and_help_from_it(command, defaults) -> None:
    found = option_defaults(command)
    assert found and found == {name: defaults[name] for name in found}
    params = typer.main.get_command(app).commands[command].params  # type: ignore[attr-defined]
    for p in params:
        if p.name in FIELDS:
            assert p.help.startswith(FIELDS[p.name].help), p.name


def test_params_take_their_defaults_and_help_from_it() -> None:
    section = SampleConfig()
    for f in dataclasses.fields(SampleConfig):
        if f.name in FIELDS:
            assert getattr(section, f.name) == SAMPLE[f.name], f.name
            assert f.metadata["help"].startswith(FIELDS[f.name].help)
    entry = DecodingConfig()
    for f in dataclasses.fields(DecodingConfig):
        if f.name in FIELDS:
            default = LIBRARY[f.name]
            assert getattr(entry, f.name) in (None, list(default) if f.name == "stop" else default)
            assert f.metadata["help"].startswith(FIELDS[f.name].help)


def test_check_names_the_setting_as_the_caller_does() -> None:
    with pytest.raises(BadInput, match=r"^--top-p: must be in \(0, 1\]"):
        check({"top_p": 2.0}, lambda s: "--" + s.replace("_", "-"))
    with pytest.raises(ConfigError, match=r"'sample.decoding\[1\].top_k': must be >= 0"):
        check({"top_k": -1}, lambda s: f"sample.decoding[1].{s}", ConfigError)
    check({"temperature": None, "top_k": 0})  # None: unset, taken from elsewhere


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"temperature": "hot"}, "temperature: expected a number, got 'hot'"),
        ({"top_k": 2.0}, "top_k: expected an integer, got 2.0"),
        ({"num_beams": True}, "num_beams: expected an integer, got True"),
        ({"stop": "\n"}, "stop: expected a list of text, got '\\n'"),
        ({"stop": ["a", 3]}, "stop: expected text, got 3"),
        ({"stop": ["a", ""]}, "stop: must be non-empty text, not ''"),
        ({"colour": "red"}, "colour: not a decoding setting"),
        ({"temperature": 10**400}, "temperature: must be 0 (greedy) or"),  # no float holds it
    ],
)
def test_check_refuses_what_is_not_a_setting_of_its_type(values, message) -> None:
    with pytest.raises(BadInput) as info:
        check(values)
    assert str(info.value).startswith(message)


def test_parse_reads_a_typed_value_and_checks_it() -> None:
    assert parse("temperature", " 0.5 ") == 0.5 and parse("top_k", "3") == 3
    assert parse("stop", "\\n") == ("\\n",)  # as typed
    with pytest.raises(BadInput, match=r"^/top_k: expected an integer, got '1\.5'"):
        parse("top_k", "1.5", lambda s: f"/{s}")
    with pytest.raises(BadInput, match=r"^/temperature: must be 0 \(greedy\) or"):
        parse("temperature", "1e-40", lambda s: f"/{s}")


def test_the_temperature_floor_is_named_in_every_help_text() -> None:
    assert f"{decoding.MIN_TEMPERATURE:g}" in FIELDS["temperature"].help
    assert f"{decoding.MAX_NEW_TOKENS:,}" in FIELDS["max_new_tokens"].help
