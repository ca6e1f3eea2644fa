"""Which paths a command may write: checked once, before anything is written or loaded.

Every output of the pipeline is replaced whole (`gptpipe.fsutil.staged_outputs` renames a new
file or folder over the old one), so a path given by mistake would be lost with everything in
it: `export models/base "$PWD"` or `tokenizer --out data` would delete the working directory
or the corpus the command just read. Each command names its outputs and inputs by option, and
`check_paths` refuses, with one line naming the option and the path:

- two outputs at one path, or one output inside another;
- an output that is the working directory or a folder above it;
- an output that is one of the command's inputs, holds one, or lies inside an input folder;
- an output where something stands that is not a previous output of the same kind: a folder
  where a file goes, a file where a folder goes, or a non-empty folder that holds none of the
  files the pipeline writes there (a model folder's weights and config, a tokenizer's ranks,
  the shards' manifest), unless the command documents `--force` and the user gave it.

The kinds are data: each module that writes a kind of folder says which files mark it (this
module imports none of them, so every stage can use it without depending on the others).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gptpipe.errors import BadInput


@dataclass(frozen=True)
class Kind:
    """What a command writes at a path: a file, or a folder recognised by its files.

    A folder is a previous output of this kind when it holds every file of one of `marks`
    (a model folder: model.safetensors and config.json, or a skipped marker), or, with
    `only_suffix`, when every file in it ends so (a folder of figures holds only .png).
    """

    name: str
    folder: bool = True
    marks: tuple[frozenset[str], ...] = ()
    only_suffix: str | None = None

    def recognises(self, folder: Path) -> bool:
        """Whether the existing folder `folder` is empty or a previous output of this kind."""
        names = {entry.name for entry in folder.iterdir()}
        if not names:
            return True
        if any(mark <= names for mark in self.marks):
            return True
        suffix = self.only_suffix
        return suffix is not None and all(
            name.endswith(suffix) and (folder / name).is_file() for name in names
        )


FILE = Kind("file", folder=False)


def folder_kind(name: str, *marks: Iterable[str], only_suffix: str | None = None) -> Kind:
    """A kind of folder output, recognised by any of the sets of file names `marks`."""
    return Kind(name, True, tuple(frozenset(mark) for mark in marks), only_suffix)


@dataclass(frozen=True)
class Output:
    """One output of a command: the option that names it, its path (None: not asked for,
    such as a run details file nobody named) and its kind."""

    option: str
    path: Path | None
    kind: Kind = FILE


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path.expanduser()))


def _within(inner: Path, outer: Path) -> bool:
    """Whether `inner` is `outer` or lies inside it (both real paths)."""
    return inner == outer or outer in inner.parents


def _sample(folder: Path, limit: int = 3) -> str:
    names = sorted(f"{e.name}/" if e.is_dir() else e.name for e in folder.iterdir())
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_paths(
    outputs: Sequence[Output],
    inputs: Iterable[tuple[str, Path | None]] = (),
    *,
    force: bool = False,
    force_option: str | None = None,
) -> None:
    """Refuse (BadInput naming the option and the path) outputs that would replace what the
    user did not mean to replace; see the module docstring for the rules. `inputs` are
    (option, path) pairs, the path None for one not given. `force_option` names the
    command's documented override (`--force`): with `force`, an output may replace a folder
    not recognised as its kind (and nothing else)."""
    given = [o for o in outputs if o.path is not None]
    _check_places(given, [(option, path) for option, path in inputs if path is not None])
    for out in given:
        assert out.path is not None
        _check_existing(out.kind, out.path, f"{out.option} {out.path}", force, force_option)


def check_targets(paths: Sequence[Path]) -> None:
    """The rules that need no option names, for the mechanism that replaces outputs
    (`gptpipe.fsutil.staged_outputs`): whoever calls it, no output is the working directory
    or a folder above it, and no two of one commit share a path or nest. A command checks
    more, and earlier, with `check_paths`."""
    _check_places([Output("output", path) for path in paths], [])


def _check_places(given: list[Output], read: list[tuple[str, Path]]) -> None:
    """Where the outputs are: apart from each other, from the working directory and from
    the inputs."""
    here = _real(Path.cwd())
    real = [_real(o.path) for o in given if o.path is not None]
    for i, out in enumerate(given):
        where = f"{out.option} {out.path}"
        path = real[i]
        if _within(here, path):
            what = "the working directory" if here == path else "a folder above the working one"
            raise BadInput(f"{where}: {what}; writing it would replace everything in it")
        for option, source in read:
            source_real = _real(source)
            if _within(source_real, path):
                same = source_real == path
                raise BadInput(
                    f"{where}: {'is' if same else 'holds'} {option} {source}, an input of "
                    "this command; write the output elsewhere"
                )
            if source.is_dir() and _within(path, source_real):
                raise BadInput(
                    f"{where}: inside {option} {source}, an input folder of this command; "
                    "write the output elsewhere"
                )
        for j, other in enumerate(given):
            if j < i and real[j] == path:
                raise BadInput(f"{where}: the same path as {other.option}; give each its own")
            if j != i and real[j] != path and _within(real[j], path):
                raise BadInput(
                    f"{where}: holds {other.option} {other.path}, another output of this "
                    "command; give them separate paths"
                )


def _check_existing(
    kind: Kind, path: Path, where: str, force: bool, force_option: str | None
) -> None:
    """What stands at the output path must be a previous output of its kind (or nothing)."""
    if not (path.exists() or path.is_symlink()):
        return
    if not kind.folder:
        if path.is_dir():
            raise BadInput(f"{where}: a folder, where a {kind.name} goes")
        return
    if not path.is_dir():
        raise BadInput(f"{where}: a file, where a {kind.name} goes")
    try:
        recognised = kind.recognises(path)
    except OSError as exc:
        raise BadInput(f"{where}: cannot read it ({exc.strerror})") from None
    if recognised or force:
        return
    hint = f", or give {force_option} to replace it" if force_option else ""
    raise BadInput(
        f"{where}: a folder that is not a {kind.name} (it holds {_sample(path)}), and "
        f"writing would replace it whole; give an empty or new folder{hint}"
    )
