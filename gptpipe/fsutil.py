"""Atomic writes: a stage's outputs appear whole or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gptpipe.errors import BadInput, os_message
from gptpipe.outputs import check_targets

# Called between the renames that commit outputs (its argument says which step): a seam for
# tests to fail a commit half-way; the product never sets it.
_commit_seam: Callable[[str], None] | None = None


def _prepare_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        # A regular file where a folder must be: name it (mkdir's own "File exists" misleads).
        blocker = next(p for p in target.parents if p.exists() or p.is_symlink())
        if blocker.is_dir():
            raise  # not a file in the way after all: a race; keep it loud
        raise BadInput(f"{target}: cannot write ({blocker} is not a folder)") from None
    except OSError as exc:
        raise BadInput(os_message(exc, target.parent)) from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _as_bad_input(exc: BaseException, target: Path, staged: Path) -> BaseException:
    """An OSError while writing `target` (through its staged path `staged`) names `target`;
    one about some other file (an input read on the way) keeps its own name."""
    if isinstance(exc, BadInput) or not isinstance(exc, Exception):
        return exc
    if not isinstance(exc, OSError):
        # Writers in Rust (safetensors) report a failed system call inside their own error.
        found = _OS_ERROR.search(str(exc))
        if found is None:
            return exc
        reason = os_message(OSError(int(found.group(1)), os.strerror(int(found.group(1)))))
        return BadInput(f"{target}: cannot write ({reason})")
    if exc.errno is None:
        return exc
    name = str(exc.filename) if exc.filename is not None else None
    if name is None or name.startswith(str(staged)):
        return BadInput(f"{target}: cannot write ({os_message(exc).split(': ', 1)[-1]})")
    return exc


_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def commit(staged: list[Path], targets: list[Path]) -> None:
    """Move each staged output over its target so that they change together: every existing
    target is first renamed aside, then every staged path renamed in, then the old ones are
    removed. A failure half-way puts every old target back (and removes the staged ones).
    A staged path that was never written removes its target: no stale output stays beside
    new ones.
    """
    token = f"{os.getpid()}-{os.urandom(3).hex()}"
    aside: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for target in targets:
            if target.exists() or target.is_symlink():
                old = target.with_name(f".{target.name}.old-{token}")
                os.replace(target, old)
                aside.append((target, old))
                if _commit_seam is not None:
                    _commit_seam(f"aside {target}")
        for new, target in zip(staged, targets, strict=True):
            if new.exists() or new.is_symlink():
                os.replace(new, target)
                placed.append(target)
                if _commit_seam is not None:
                    _commit_seam(f"placed {target}")
    except BaseException as exc:
        for target in placed:
            _remove(target)
        for target, old in aside:
            os.replace(old, target)
        for new in staged:
            _remove(new)
        if isinstance(exc, OSError) and not isinstance(exc, BadInput):
            raise BadInput(os_message(exc)) from None
        raise
    for _, old in aside:
        _remove(old)


def _remove_stale(target: Path) -> None:
    """Remove what a killed run left beside `target`: staged outputs and set-aside old ones
    of processes that no longer exist (their names carry the process id)."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:old-)?(\d+)-[0-9a-f]{{6}}(?:\.tmp)?$")
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return
    for sibling in sorted(siblings):
        match = pattern.match(sibling.name)
        if not match or _alive(int(match.group(1))):
            continue
        if ".old-" in sibling.name and not (target.exists() or target.is_symlink()):
            os.replace(sibling, target)  # killed between the renames: the old output returns
        else:
            _remove(sibling)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def staged_outputs(*targets: Path | str) -> Iterator[list[Path]]:
    """Yield one temporary path beside each target (nothing created there yet: write a file
    or a folder at each); on success all of them replace their targets together (`commit`).

    On any exception (Ctrl-C included) the temporary paths are removed and every target is
    left as it was, so a stage's outputs appear together or not at all.
    """
    paths = [Path(t) for t in targets]
    check_targets(paths)  # never the working directory, a folder above it, or nested outputs
    token = f"{os.getpid()}-{os.urandom(3).hex()}"
    staged = [p.with_name(f".{p.name}.{token}.tmp") for p in paths]
    for path in paths:
        _prepare_parent(path)
        _remove_stale(path)
    try:
        yield staged
    except BaseException as exc:
        for new in staged:
            _remove(new)
        if type(exc) is BadInput:
            # A writer's message names the staged path it wrote to: name the output instead.
            message = str(exc)
            for target, new in zip(paths, staged, strict=True):
                message = message.replace(str(new), str(target))
            if message != str(exc):
                raise BadInput(message) from None
        converted = next(
            (
                c
                for t, n in zip(paths, staged, strict=True)
                if (c := _as_bad_input(exc, t, n)) is not exc
            ),
            exc,
        )
        if converted is not exc:
            raise converted from None
        raise
    commit(staged, paths)


@contextlib.contextmanager
def atomic_dir(target: Path | str) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; on success it replaces `target`.

    On any exception (Ctrl-C included) the temporary folder is removed and `target`
    is left as it was, so DVC never sees a half-written output.
    """
    with staged_outputs(target) as (tmp,):
        try:
            tmp.mkdir(mode=0o755)
        except OSError as exc:
            raise BadInput(
                f"{target}: cannot write ({os_message(exc).split(': ', 1)[-1]})"
            ) from None
        yield tmp


@contextlib.contextmanager
def atomic_file(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed over `target`.

    Failures of the file system (a full disk, a read-only folder, a path under a regular
    file) are bad input naming `target`.
    """
    target = Path(target)
    _prepare_parent(target)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise BadInput(f"{target}: cannot write ({os_message(exc).split(': ', 1)[-1]})") from None
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(0o644)  # mkstemp makes it private; outputs are ordinary files
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        converted = _as_bad_input(exc, target, tmp)
        if converted is not exc:
            raise converted from None
        raise


def write_text(target: Path | str, text: str) -> None:
    """Write a text file atomically."""
    with atomic_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: Path | str, obj: Any) -> None:
    """Write a JSON file atomically, indented and with a trailing newline."""
    write_text(target, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path | str) -> Any:
    """Read a JSON file; a missing or malformed file is bad input naming the file."""

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise BadInput(f"{path}: not valid JSON (nested too deeply)") from None
    except OSError as exc:
        raise BadInput(os_message(exc, path)) from None


def files_sha256(*paths: Path) -> str:
    """sha256 over the bytes of files (for `checkpoint_key`: data and base weights)."""
    digest = hashlib.sha256()
    for path in paths:
        with Path(path).open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
