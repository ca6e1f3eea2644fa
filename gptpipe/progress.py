"""Rich progress bars on stderr, shared by every stage (stdout stays for results), and the
one line each stage ends with."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def progress(*extra_columns: TextColumn) -> Progress:
    """A progress display: description, bar, n/total, elapsed, ETA, then any extra columns."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        console=console,
        transient=False,
    )


def wrote(stage: str, *paths: Path | None, summary: str = "") -> None:
    """End a stage command with its one summary line on stderr, `STAGE: SUMMARY; wrote PATH,
    PATH, ...`: every output it wrote (a path given as None, such as a details file not asked
    for, is left out). Run by hand, a stage says so which of the pipeline's outputs it
    replaced; under `dvc repro` it is the stage's one line in the log."""
    listed = ", ".join(str(path) for path in paths if path is not None)
    said = f"{summary}; " if summary else ""
    console.print(f"{stage}: {said}wrote {listed}", soft_wrap=True, markup=False, highlight=False)
