"""What every command shares: the `--params`/`-S` options and the bad-input guard."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, overload

import typer

from gptpipe.config import (
    SECTION_OF,
    BaseConfig,
    ClassifyConfig,
    DataConfig,
    EvaluateConfig,
    InstructConfig,
    ModelConfig,
    PretrainConfig,
    ReportConfig,
    SampleConfig,
    ShardConfig,
    TokenizerConfig,
    load_section,
)
from gptpipe.errors import one_line

ParamsOption = Annotated[
    Path, typer.Option("--params", help="Params file (YAML, one section per stage).")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "-S", "--set", help="Override a param: SECTION.KEY=VALUE (repeatable), as dvc exp run -S."
    ),
]

# Options the training and model-reading stages share (each stage gives its own default).
CorpusOption = Annotated[
    Path,
    typer.Option("--corpus", help="Corpus text: documents separated by '<|endoftext|>' lines."),
]
BaseModelOption = Annotated[
    Path, typer.Option("--base", help="Base model folder (gptpipe weights).")
]
ModelOutOption = Annotated[Path, typer.Option("--out", help="Model folder to write.")]
MetricsOption = Annotated[Path, typer.Option("--metrics", help="Metrics JSON to write.")]
RunDetailsOption = Annotated[
    Path,
    typer.Option(
        "--details", help="Run details JSON to write (seconds, device, steps; not a DVC metric)."
    ),
]
# The same for the stages that record only their wall time: written only when given (dvc.yaml
# gives it), so running such a stage alone writes nothing under reports/.
StageDetailsOption = Annotated[
    Path | None,
    typer.Option(
        "--details",
        help="Run details JSON to write (wall seconds and counts; not a DVC metric). "
        "Default: none.",
    ),
]
PlotsOption = Annotated[
    Path, typer.Option("--plots", help="Folder for the curves (train.csv, val.csv).")
]
CheckpointsOption = Annotated[
    Path,
    typer.Option("--checkpoints", help="Resumable training state; removed when training finishes."),
]
ModelsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--model", help="Model folder (repeatable). Default: models/base and models/instruct."
    ),
]

F = TypeVar("F", bound=Callable[..., Any])


def guarded(fn: F) -> F:
    """Run a command so that bad input exits 2 with one line, and Ctrl-C exits 130.

    Bad input is `BadInput` (raised where the key or file is known) and the foreseeable
    failures `gptpipe.errors.one_line` recognises (a file system that refuses, nesting too
    deep to parse); anything else is a bug and stays a traceback with exit status 1.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            print("gptpipe: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None
        except Exception as exc:
            message = one_line(exc)
            if message is None:
                raise
            print(f"gptpipe: error: {message}", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


C = TypeVar("C")
Overrides = list[str] | None


# One overload per section name, so that `section("pretrain", ...)` is a PretrainConfig to the
# type checker; `section(PretrainConfig, ...)` is the same call by class.
@overload
def section(which: type[C], params: Path, overrides: Overrides) -> C: ...
@overload
def section(which: Literal["data"], params: Path, overrides: Overrides) -> DataConfig: ...
@overload
def section(which: Literal["tokenizer"], params: Path, overrides: Overrides) -> TokenizerConfig: ...
@overload
def section(which: Literal["shard"], params: Path, overrides: Overrides) -> ShardConfig: ...
@overload
def section(which: Literal["model"], params: Path, overrides: Overrides) -> ModelConfig: ...
@overload
def section(which: Literal["pretrain"], params: Path, overrides: Overrides) -> PretrainConfig: ...
@overload
def section(which: Literal["base"], params: Path, overrides: Overrides) -> BaseConfig: ...
@overload
def section(which: Literal["instruct"], params: Path, overrides: Overrides) -> InstructConfig: ...
@overload
def section(which: Literal["classify"], params: Path, overrides: Overrides) -> ClassifyConfig: ...
@overload
def section(which: Literal["evaluate"], params: Path, overrides: Overrides) -> EvaluateConfig: ...
@overload
def section(which: Literal["sample"], params: Path, overrides: Overrides) -> SampleConfig: ...
@overload
def section(which: Literal["report"], params: Path, overrides: Overrides) -> ReportConfig: ...


def section(which: str | type[Any], params: Path, overrides: Overrides) -> Any:
    """The validated config of one params section (by name or dataclass), with `-S` overrides
    applied."""
    name = which if isinstance(which, str) else SECTION_OF[which]
    return load_section(name, params, overrides or [])
