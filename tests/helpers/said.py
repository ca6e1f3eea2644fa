"""What a stage command says when it is done: its one summary line, last on stderr."""

from __future__ import annotations

from pathlib import Path


def lines(stderr: str) -> list[str]:
    """The non-blank lines of `stderr`."""
    return [line for line in stderr.splitlines() if line.strip()]


def wrote(stderr: str, stage: str) -> tuple[str, list[str]]:
    """(summary, paths) of the summary line `STAGE: [SUMMARY; ]wrote PATH, PATH, ...` that must
    end `stderr`."""
    last = lines(stderr)[-1]
    head, sep, listed = last.rpartition("wrote ")
    assert last.startswith(f"{stage}: ") and sep, f"no line of {stage} at the end:\n{stderr}"
    summary = head.removeprefix(f"{stage}: ").removesuffix("; ")
    return summary, listed.split(", ")


def paths(*items: Path | str) -> list[str]:
    """The paths as the summary line lists them."""
    return [str(item) for item in items]


def options(paths: dict[str, Path]) -> list[str]:
    """Command-line arguments giving each option its path: {"--out": p} -> ["--out", "p"]."""
    return [arg for option, path in paths.items() for arg in (option, str(path))]
