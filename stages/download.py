"""DVC stage `download`: the corpus, instruction and classification data into data/raw/."""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from gptpipe import __version__, default_paths
from gptpipe.config import CorpusFiles, DataConfig
from gptpipe.errors import BadInput
from gptpipe.fsutil import write_json
from gptpipe.metrics import ran_with, staged_with_details, wall_seconds
from gptpipe.options import ParamsOption, SetOption, StageDetailsOption, section
from gptpipe.outputs import Output, check_paths, folder_kind
from gptpipe.progress import wrote
from gptpipe.sources.datasets import (
    FILE_NAMES,
    KINDS,
    NAMED_SETS,
    STDLIB,
    NamedSet,
    Source,
    check_source,
    load_source,
)
from gptpipe.sources.fetch import (
    FetchOptions,
    file_url_path,
    sha256_and_size,
    source_kind,
    split_member,
)
from gptpipe.sources.formats import Fields
from gptpipe.sources.many import FileList
from gptpipe.sources.stdlib import build_stdlib

_PROVENANCE_FILE = default_paths.PROVENANCE.name
_RAW_FOLDER = folder_kind("data folder", {_PROVENANCE_FILE})  # what gptpipe.outputs recognises


def _mirror_folder(cfg: DataConfig) -> Path | None:
    """The mirror folder (data.mirror, else $GPTPIPE_MIRROR); a missing folder is bad input."""
    path = cfg.mirror_dir()
    if path is not None and not path.is_dir():
        where = "params key 'data.mirror'" if cfg.mirror else "GPTPIPE_MIRROR"
        raise BadInput(f"{where}: {path}: mirror folder not found")
    return path


def _source(cfg: DataConfig, kind: str) -> Source:
    """A kind's source as the library takes it (a `{files: [...]}` corpus as a FileList)."""
    value = getattr(cfg, kind)
    if isinstance(value, CorpusFiles):
        return FileList(tuple(cfg.sources(kind)))
    return cfg.sources(kind)


def _fields(cfg: DataConfig) -> Fields:
    """Where records keep their fields: data.text_column and data.columns."""
    c = cfg.columns
    return Fields(cfg.text_column, c.instruction, c.input, c.output, c.label, c.text)


def _local_sources(cfg: DataConfig, table: dict[str, NamedSet]) -> Iterator[tuple[str, Path]]:
    """(params key, path) of every source given as a local path or file:// URL (an archive's
    path without its #member; a glob as written, so `data/inputs/*.parquet` is inside
    data/inputs and `data/*/x.parquet` is not); named sets and http(s) URLs are not local."""
    for kind in KINDS:
        sources = cfg.sources(kind)
        files = isinstance(getattr(cfg, kind), CorpusFiles)
        for i, item in enumerate(sources):
            key = f"data.{kind}" if len(sources) == 1 else f"data.{kind}[{i}]"
            key = f"data.{kind}.files[{i}]" if files else key
            if item == STDLIB or item in table:
                continue
            found = source_kind(item, key)
            if found == "url":
                continue
            base, _ = split_member(item, found)
            if found == "file":
                yield key, file_url_path(base)
            else:
                yield key, Path(base).expanduser()


def _check_watched(cfg: DataConfig, table: dict[str, NamedSet]) -> None:
    """Under DVC (it sets DVC_STAGE), refuse a local source outside `data.inputs`, the folder
    dvc.yaml makes a dependency of this stage: DVC would not see it change, and `dvc repro`
    would keep the old data. Named sets are pinned by sha256 and URLs are fetched anew when
    the params change, so only local paths are checked. Paths are compared as written (not
    resolved), so a link inside the folder to a file elsewhere is inside: DVC hashes what
    the link points to."""
    if not os.environ.get("DVC_STAGE"):
        return
    inputs = Path(os.path.abspath(Path(cfg.inputs).expanduser()))
    for key, path in _local_sources(cfg, table):
        full = Path(os.path.abspath(path))
        if full != inputs and inputs not in full.parents:
            raise BadInput(
                f"params key '{key}': {path} is outside data.inputs ({cfg.inputs}), the "
                "folder dvc.yaml watches for local data, so DVC would not see it change; "
                f"move or link it into {cfg.inputs}, or set data.inputs to a folder that "
                "holds it"
            )


def run(
    cfg: DataConfig,
    out: Path,
    *,
    named: dict[str, NamedSet] | None = None,
    backoff: float = 1.0,
    details: Path | None = None,
) -> dict[str, Any]:
    """Fetch or build the three data sets, normalise them and write `out` as one folder.

    Returns the provenance (also written to `out/provenance.json`). `named` replaces the
    table of named sets and `backoff` the first retry delay (tests point them at a local
    server); nothing is written unless all three sources succeed. `details` gets the run
    details (wall seconds, bytes written), together with `out`.
    """
    started = time.perf_counter()
    table = NAMED_SETS if named is None else named
    sources = {kind: _source(cfg, kind) for kind in KINDS}
    how = {kind: check_source(kind, sources[kind], f"data.{kind}", table) for kind in KINDS}
    _check_watched(cfg, table)
    mirror = _mirror_folder(cfg) if "named" in how.values() else None
    options = FetchOptions(cfg.timeout, cfg.retries, cfg.max_bytes, backoff)
    stdlib = functools.cache(build_stdlib)  # built once for the kinds that take it
    provenance: dict[str, Any] = {"gptpipe": __version__}
    with staged_with_details(out, details) as (tmp, new_details):
        tmp.mkdir(mode=0o755)
        work_dir = tmp / ".downloads"
        for kind in KINDS:
            dest = tmp / FILE_NAMES[kind]
            loaded = load_source(
                kind, sources[kind], f"data.{kind}", work_dir, dest, options,
                mirror=mirror, named=table, stdlib=stdlib, fields=_fields(cfg),
            )  # fmt: skip
            sha, size = sha256_and_size(dest)
            output = {"file": FILE_NAMES[kind], "sha256": sha, "bytes": size}
            provenance[kind] = loaded.provenance | {"output": output, "counts": loaded.counts}
        shutil.rmtree(work_dir, ignore_errors=True)
        write_json(tmp / _PROVENANCE_FILE, provenance)
        if new_details is not None:
            written = sum(provenance[kind]["output"]["bytes"] for kind in KINDS)
            record = {"bytes": written, "wall_seconds": wall_seconds(started)}
            write_json(new_details, record | ran_with(data=cfg))
    return provenance


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    out: Annotated[
        Path,
        typer.Option(
            help="Output folder: corpus.txt, instruct.json, classify.tsv, provenance.json."
        ),
    ] = default_paths.RAW,
    details: StageDetailsOption = None,
) -> None:
    """Download (or build offline) the corpus, instruction and classification data.

    Named sets come from the mirror folder if it has them, else their URLs; sha256 verified.
    A URL or path may name an archive member (data.zip#dir/file.tsv); a list of them is a
    list of mirrors tried in order. A corpus may be many files: a local folder or glob, or
    {files: [url, ...]}; Parquet, JSON (Lines) and text, .gz and .zst.

    The default, stdlib, is built offline from this Python's standard library.
    """
    cfg: DataConfig = section("data", params, set_)
    inputs = [
        ("--params", params),
        ("data.inputs", Path(cfg.inputs)),
        ("data.mirror", cfg.mirror_dir()),
    ]
    inputs += list(_local_sources(cfg, NAMED_SETS))
    check_paths([Output("--out", out, _RAW_FOLDER), Output("--details", details)], inputs)
    provenance = run(cfg, out, details=details)
    sources = []
    for kind in KINDS:
        entry = provenance[kind]
        counts = ", ".join(f"{k} {v}" for k, v in entry["counts"].items() if k != "labels")
        given = entry["source"]
        shown = f"{len(given['files'])} files" if isinstance(given, dict) else given
        sources.append(f"{kind} {shown} ({counts})")
    wrote("download", out, details, summary="; ".join(sources))
