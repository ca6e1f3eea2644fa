"""Decoding settings: the one home of their fields, ranges and defaults.

Temperature, top-k, top-p, repetition penalty, beams, length penalty, stop strings, the
slide, max new tokens, samples and seed: `FIELDS` says what each one does and which values it
takes, `check` is the one place the ranges are enforced, and the default sets below are
every entry point's defaults. params.yaml's sample section (`gptpipe.config.SampleConfig`,
`DecodingConfig`), `gptpipe generate`, `gptpipe chat` (its options and /commands) and the
decoding loop's `Decoding` are built from it, and a server builds its request validation
from it: so it imports no torch (every stage reads config.py, which reads this).

Each caller names a setting its own way (`sample.decoding[1].temperature`, `--temperature`,
`/temperature`); `check` takes that naming and reports the setting by it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from gptpipe.errors import BadInput

# The lowest positive temperature. Sampling divides the float32 logits by T, and float32 tops
# out at 3.4e38: at T = 1e-37 a logit of 35 is already inf (and the softmax then NaN), and
# 1e-45 is float32's smallest number (1e-46 is 0, a division by zero). From T = 1e-4 up, a
# logit would have to pass 3.4e34 to overflow, which no model's logits come near. Nothing is
# lost below it: at T = 1e-4 a logit gap of 0.01 already makes the top token e^100 times
# likelier than the next, so a smaller T is greedy decoding in all but name, and T = 0 is
# the greedy setting itself.
MIN_TEMPERATURE = 1e-4
# The most tokens a continuation asks for. The window slides when the context fills, so
# nothing else bounds a continuation that never meets <|endoftext|> or a stop string; with
# this bound a command always ends.
MAX_NEW_TOKENS = 1_000_000
# torch.manual_seed takes any 64-bit seed; keep seeds non-negative and inside that range
# (the training seeds of params.yaml too: gptpipe.config).
MAX_SEED = 2**63 - 1

_KINDS: dict[type, str] = {int: "an integer", float: "a number", str: "text"}


@dataclass(frozen=True)
class Field:
    """One decoding setting: its type, the library's default, what it does and the values it
    takes (`accepts` one value, or one stop string of the list a `many` setting holds)."""

    name: str
    type: type
    default: Any
    does: str
    allowed: str
    accepts: Callable[[Any], bool]
    many: bool = False

    @property
    def help(self) -> str:
        """What it does and the values it takes, for every help text that documents it."""
        return f"{self.does}: {self.allowed}."

    def problem(self, value: Any) -> str | None:
        """Why `value` is not one this setting takes, or None when it is."""
        items = value if self.many else (value,)
        if self.many and not isinstance(value, list | tuple):
            return f"expected a list of {_KINDS[self.type]}, got {value!r}"
        for item in items:
            if not _is(self.type, item):
                return f"expected {_KINDS[self.type]}, got {item!r}"
            if not _accepted(self.accepts, item):
                return f"must be {self.allowed}, not {item!r}"
        return None


def _accepted(accepts: Callable[[Any], bool], value: Any) -> bool:
    """`accepts(value)`; an integer too large for a float (math.isfinite of 10**400) is not."""
    try:
        return accepts(value)
    except OverflowError:
        return False


def _is(kind: type, value: Any) -> bool:
    """Whether `value` is of a setting's type: an int passes as a float, a bool as nothing."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)


FIELDS: Mapping[str, Field] = MappingProxyType(
    {
        f.name: f
        for f in (
            Field(
                "max_new_tokens",
                int,
                64,
                "Tokens generated at most; a continuation ends there, or earlier at "
                "<|endoftext|> or a stop string",
                f"in 1..{MAX_NEW_TOKENS:,}",
                lambda v: 1 <= v <= MAX_NEW_TOKENS,
            ),
            Field(
                "temperature",
                float,
                0.0,
                "Softmax temperature",
                f"0 (greedy) or a finite number >= {MIN_TEMPERATURE:g} (a smaller one "
                "overflows the logits)",
                lambda v: v == 0 or (math.isfinite(v) and v >= MIN_TEMPERATURE),
            ),
            Field(
                "top_k",
                int,
                0,
                "Sample among the k most likely tokens",
                ">= 0 (0: all)",
                lambda v: v >= 0,
            ),
            Field(
                "top_p",
                float,
                1.0,
                "Nucleus: sample among the most likely tokens of mass p",
                "in (0, 1] (1: off)",
                lambda v: 0 < v <= 1,  # false for NaN
            ),
            Field(
                "repetition_penalty",
                float,
                1.0,
                "Penalty on tokens already in the text; > 1 discourages them",
                "a finite number > 0 (1: off)",
                lambda v: math.isfinite(v) and v > 0,
            ),
            Field(
                "num_beams",
                int,
                1,
                "Beam search with this many beams (deterministic)",
                ">= 1 (1: no beam search)",
                lambda v: v >= 1,
            ),
            Field(
                "length_penalty",
                float,
                1.0,
                "Beam search: score / length ** this; > 0 favours longer continuations, "
                "< 0 shorter",
                "a finite number",
                math.isfinite,
            ),
            Field(
                "stop",
                str,
                (),
                "Text that ends a continuation (not included)",
                "non-empty text",
                bool,
                many=True,
            ),
            Field(
                "slide",
                int,
                0,
                "Tokens dropped from the window when the context fills, so that generation "
                "goes on past it",
                ">= 0 (0: a quarter of the context)",
                lambda v: v >= 0,
            ),
            Field(
                "num_samples",
                int,
                1,
                "Continuations drawn per prompt",
                ">= 1",
                lambda v: v >= 1,
            ),
            Field(
                "seed",
                int,
                1337,
                "Sampling seed (same seed, same text)",
                f"in 0..{MAX_SEED} (2**63 - 1)",
                lambda v: 0 <= v <= MAX_SEED,
            ),
        )
    }
)

# Each entry point's defaults. The library (`Decoding`, `generate_text`) decodes greedily
# with every rule off unless asked, so that a call from code is reproducible; the commands
# sample, as a person asking for text expects; params.yaml's sample section draws two samples
# per prompt and setting; chat answers at length, a little cooler, and discourages repeats.
LIBRARY: Mapping[str, Any] = MappingProxyType({name: f.default for name, f in FIELDS.items()})
GENERATE: Mapping[str, Any] = MappingProxyType({**LIBRARY, "temperature": 0.8, "top_k": 40})
SAMPLE: Mapping[str, Any] = MappingProxyType({**GENERATE, "num_samples": 2})
CHAT: Mapping[str, Any] = MappingProxyType(
    {
        **GENERATE,
        "max_new_tokens": 200,
        "temperature": 0.7,
        "top_p": 0.95,
        "repetition_penalty": 1.1,
    }
)


class SettingError(BadInput):
    """A decoding setting `check` refused: the caller's `name` for it and the `message`."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name, self.message = name, message


def check(
    values: Mapping[str, Any],
    name: Callable[[str], str] = str,
    error: Callable[[str, str], Exception] = SettingError,
) -> None:
    """Refuse the first of `values` (setting -> value; None: unset, taken from elsewhere)
    that is not one its setting takes, or that names no setting: raises `error(the caller's
    name for it, why)`. `name` maps a setting to that name (`--top-p`, `/top_p`,
    `sample.decoding[1].top_p`); `error` is the exception the caller raises
    (`gptpipe.config.ConfigError` for a params key)."""
    for setting, value in values.items():
        if value is None:
            continue
        field = FIELDS.get(setting)
        if field is None:
            raise error(name(setting), f"not a decoding setting; they are {', '.join(FIELDS)}")
        problem = field.problem(value)
        if problem is not None:
            raise error(name(setting), problem)


def parse(
    setting: str,
    text: str,
    name: Callable[[str], str] = str,
    error: Callable[[str, str], Exception] = SettingError,
) -> Any:
    """A setting's value typed as text (a chat /command's argument), converted to its type
    and `check`ed; a stop string is taken as typed."""
    field = FIELDS[setting]
    try:
        value = field.type(text)  # int() and float() take surrounding spaces
    except ValueError:
        raise error(name(setting), f"expected {_KINDS[field.type]}, got {text!r}") from None
    value = (value,) if field.many else value
    check({setting: value}, name, error)
    return value


@dataclass(frozen=True)
class Decoding:
    """How one continuation is decoded: the settings the decoding loop takes (those of
    `FIELDS` but num_samples and seed, which say how many continuations and from which seed).
    Checked when built: a value out of its range is a `SettingError` naming the field."""

    max_new_tokens: int = LIBRARY["max_new_tokens"]
    temperature: float = LIBRARY["temperature"]  # 0: greedy
    top_k: int = LIBRARY["top_k"]  # 0: off
    top_p: float = LIBRARY["top_p"]  # 1: off
    repetition_penalty: float = LIBRARY["repetition_penalty"]  # 1: off
    num_beams: int = LIBRARY["num_beams"]  # > 1: beam search (deterministic)
    length_penalty: float = LIBRARY["length_penalty"]  # beam search: score / length ** this
    stop: tuple[str, ...] = LIBRARY["stop"]  # text that ends a continuation (not included)
    slide: int = LIBRARY["slide"]  # tokens dropped when the context fills; 0: a quarter

    def __post_init__(self) -> None:
        if isinstance(self.stop, list):
            object.__setattr__(self, "stop", tuple(self.stop))
        check(self.values())

    def values(self) -> dict[str, Any]:
        """The settings as a mapping (setting -> value)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Decoding:
        """The Decoding of those of `values` it has fields for (the rest, num_samples and
        seed, are the caller's); the others take the library's defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})
