"""A corpus made of many files: a local glob or folder, or an explicit list of files.

- A glob (`data/inputs/fineweb/*.parquet`, `**` for any depth) names the files it matches
  (folders it matches are not entered), sorted by path; one matching no file is bad input.
- A folder names every file under it, at any depth, sorted by path relative to it; names
  starting with `.` (and whatever is under such a folder) are skipped, so `.gitignore` and
  tool caches are not read as text. A folder holding no file is bad input.
- `FileList` is an explicit list of files (URLs, file:// URLs or local paths, each of them
  possibly a glob or a folder itself) read in the order given. It is a different thing from
  a plain list, which holds mirrors of one file.

Every file is fetched (downloaded, or read in place), unpacked when compressed (`.gz`,
`.zst`, ...), read by its own format (by its name: Parquet, JSON Lines, JSON, else plain
text) and its documents appended to one `corpus.txt`, which is written as it goes and
appears only when every file has been read. Each file's location, sha256, size and counts
(documents; Parquet rows and null rows) are returned for provenance.json.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptpipe.errors import BadInput
from gptpipe.fsutil import atomic_file
from gptpipe.sources.fetch import FetchOptions, fetch_source, source_kind, split_member
from gptpipe.sources.formats import DEFAULT_FIELDS, CorpusWriter, Counts, Fields
from gptpipe.sources.readers import feed_file

GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class FileList:
    """An explicit list of the files of one corpus (params: `data.corpus: {files: [...]}`)."""

    files: tuple[str, ...]


def is_glob(source: str) -> bool:
    """A local path holding glob characters that does not exist as written (so a file whose
    name holds `[` is still that file)."""
    return any(c in source for c in GLOB_CHARS) and not Path(source).expanduser().exists()


def local_many(source: str) -> str | None:
    """'glob' or 'folder' when a local source names many files, else None."""
    if source_kind(source, "") != "path":
        return None
    if is_glob(source):
        return "glob"
    if Path(source).expanduser().is_dir():
        return "folder"
    return None


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def expand(source: str, key: str) -> list[str]:
    """The files a source names, in reading order: a glob's matches or a folder's files
    sorted by path, else the source itself. Naming no file is bad input."""
    many = local_many(source)
    if many is None:
        return [source]
    if many == "glob":
        pattern = os.path.expanduser(source)
        found = sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not found:
            raise BadInput(f"params key '{key}': {source}: no files match this pattern")
        return found
    folder = Path(source).expanduser()
    files = sorted(
        (p.relative_to(folder) for p in folder.rglob("*") if p.is_file()),
        key=lambda p: p.as_posix(),
    )
    files = [p for p in files if not _hidden(p)]
    if not files:
        raise BadInput(
            f"params key '{key}': {source}: folder holds no files to read (names starting "
            "with '.' are skipped)"
        )
    return [str(folder / p) for p in files]


def expand_all(sources: Sequence[str], key: str) -> list[tuple[str, str]]:
    """(params key, file) for every file of a list of sources, in order."""
    found = []
    for i, source in enumerate(sources):
        item_key = key if len(sources) == 1 else f"{key}[{i}]"
        found += [(item_key, path) for path in expand(source, item_key)]
    return found


def check_entry(source: str, key: str) -> None:
    """Before anything is fetched: a scheme we read, and a local file, folder or glob that
    exists (a glob must match)."""
    kind = source_kind(source, key)
    if kind != "path":
        return
    base, _ = split_member(source, kind)
    if local_many(base) is not None:
        expand(base, key)
    elif not Path(base).expanduser().is_file():
        raise BadInput(f"params key '{key}': {base}: file not found")


def write_corpus_files(
    files: Sequence[tuple[str, str]],
    work_dir: Path,
    dest: Path,
    options: FetchOptions,
    *,
    fields: Fields = DEFAULT_FIELDS,
    key: str = "data.corpus",
) -> tuple[list[dict[str, Any]], Counts]:
    """Fetch and read `files` ((params key, source) pairs) in order into one corpus at
    `dest`, streaming: one file is fetched and unpacked at a time (and removed once read).

    Returns each file's provenance entry and the corpus's counts (null rows summed over the
    files). Nothing is left at `dest` unless every file reads and the corpus has text.
    """
    entries: list[dict[str, Any]] = []
    nulls = 0
    with atomic_file(dest) as tmp, open(tmp, "w", encoding="utf-8", newline="") as out:
        writer = CorpusWriter(out)
        for i, (item_key, source) in enumerate(files):
            scratch = work_dir / f"file-{i}"
            try:
                fetched = fetch_source(source, item_key, scratch, options)
                found = feed_file(writer, fetched.path, fetched.location, fields)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            entry: dict[str, Any] = {
                "location": fetched.location,
                "sha256": fetched.sha256,
                "bytes": fetched.bytes,
            }
            if fetched.archive:
                entry["archive"] = fetched.archive
            entries.append(entry | found)
            nulls += found.get("null_rows", 0)
        counts = writer.close()
        if not counts["documents"]:
            raise BadInput(f"params key '{key}': empty corpus (no text in {len(files)} files)")
    return entries, counts | {"files": len(files), "null_rows": nulls}
