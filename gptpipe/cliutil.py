"""What every command shares: the `--params`/`-S` options and the bad-input guard."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from gptpipe.config import load_section
from gptpipe.errors import BadInput

ParamsOption = Annotated[
    Path, typer.Option("--params", help="Params file (YAML, one section per stage).")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "-S", "--set", help="Override a param: SECTION.KEY=VALUE (repeatable), as dvc exp run -S."
    ),
]

F = TypeVar("F", bound=Callable[..., Any])


def guarded(fn: F) -> F:
    """Run a command so that bad input exits 2 with one line, and Ctrl-C exits 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BadInput as exc:
            print(f"gptpipe: error: {exc}", file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("gptpipe: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def section(name: str, params: Path, overrides: list[str] | None) -> Any:
    """The validated config of one params section, with `-S` overrides applied."""
    return load_section(name, params, overrides or [])
