"""Fault injectors and the assertions every fault case makes.

- `cli(args)`: the command line in-process; `expect_bad_input` checks exit 2, one line on
  stderr naming the key or file, and no traceback.
- `raises_bad_input(fn)`: the same for a plain function (`BadInput`, one line).
- `small_fs(path, size)`: a tiny tmpfs at `path` (a full disk), `read_only_fs(path)`: a
  read-only one; both skip where mounting is not allowed (not root).
- `leftovers(folder)`: temporary files a failed write must not leave behind.
- `commit_fails_at(n)`: the seam between the renames of a staged commit fails at step n.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from gptpipe import fsutil
from gptpipe.cli.app import app
from gptpipe.errors import BadInput

_runner = CliRunner()


def cli(args: list[str | Path], cwd: Path | None = None) -> Result:
    """Run `gptpipe ARGS` in this process (stderr apart from stdout)."""
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        return _runner.invoke(app, [str(a) for a in args])


def expect_bad_input(result: Result, *fragments: str) -> str:
    """Exit 2 and one error line on stderr (the last; progress lines may come before it),
    naming every fragment; no traceback anywhere."""
    stderr = result.stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, stderr, result.exception)
    assert "Traceback" not in stderr + result.stdout
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    assert errors[0].startswith("gptpipe: error: "), errors[0]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def raises_bad_input(fn: Callable[[], Any], *fragments: str) -> str:
    """`fn()` raises BadInput whose message is one line naming every fragment."""
    with pytest.raises(BadInput) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files and folders (staged outputs, .part downloads) in `folder`."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.rglob(".*") if p.name.endswith((".tmp", ".part")))


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under `path` (or the file itself) with its bytes, to compare before/after."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    if not path.exists():
        return {}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def inodes(paths: dict[str, Path]) -> dict[str, int]:
    """The inode of each named output: an output renamed in by a commit gets a new one, even
    when its bytes happen to be the same (a headline metric a tiny run leaves unchanged)."""
    return {key: path.stat().st_ino for key, path in paths.items()}


def snapshot_outputs(paths: dict[str, Path]) -> dict[str, dict[str, bytes]]:
    """`snapshot` of each of a stage's named outputs."""
    return {key: snapshot(path) for key, path in paths.items()}


def finetune_args(
    kind: str, base: Path, root: Path, data: Path, paths: dict[str, Path], *sets: str
) -> list[str | Path]:
    """`gptpipe finetune KIND` on `base` and `data`, params from root/params.yaml, resume state
    under root/checkpoints, each output at `paths[key]` (`--key`), then `-S` overrides."""
    args: list[str | Path] = ["finetune", kind, "--params", root / "params.yaml"]
    args += ["--base", base, "--data", data, "--checkpoints", root / "checkpoints"]
    for key, path in paths.items():
        args += [f"--{key}", path]
    for item in sets:
        args += ["-S", item]
    return args


@contextlib.contextmanager
def _mounted(path: Path, options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _can_mount() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def small_fs(path: Path, size: str = "64k") -> Iterator[Path]:
    """A tmpfs of `size` at `path`: writes past it fail with ENOSPC (a full disk)."""
    if not _can_mount():
        pytest.skip("mounting a small file system needs root")
    with _mounted(path, f"size={size}") as mounted:
        yield mounted


@contextlib.contextmanager
def read_only_fs(path: Path) -> Iterator[Path]:
    """A read-only tmpfs at `path` (EROFS on every write, even for root)."""
    if not _can_mount():
        pytest.skip("mounting a read-only file system needs root")
    with _mounted(path, "ro,size=64k") as mounted:
        yield mounted


@contextlib.contextmanager
def commit_fails_at(step: int) -> Iterator[list[str]]:
    """Make the `step`-th rename of the next staged commit (1: the first old output set
    aside) fail as a crash there would; yields the steps taken."""
    steps: list[str] = []

    def seam(what: str) -> None:
        steps.append(what)
        if len(steps) == step:
            raise OSError(5, "injected failure between two renames")

    before = fsutil._commit_seam
    fsutil._commit_seam = seam
    try:
        yield steps
    finally:
        fsutil._commit_seam = before
