"""DVC stage `download`: the corpus, instruction and classification data into data/raw/."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from gptpipe import __version__, layout
from gptpipe.cli.options import ParamsOption, SetOption, StageDetailsOption, section
from gptpipe.config import DataConfig
from gptpipe.errors import BadInput
from gptpipe.fsutil import write_json
from gptpipe.metrics import staged_with_details, wall_seconds
from gptpipe.sources.datasets import (
    FILE_NAMES,
    KINDS,
    NAMED_SETS,
    NamedSet,
    check_source,
    load_source,
)
from gptpipe.sources.fetch import FetchOptions, sha256_and_size
from gptpipe.sources.stdlib import StdlibBuild, build_stdlib

_PROVENANCE_FILE = layout.PROVENANCE.name


def _mirror_folder(cfg: DataConfig) -> Path | None:
    """The mirror folder (data.mirror, else $GPTPIPE_MIRROR); a missing folder is bad input."""
    path = cfg.mirror_dir()
    if path is not None and not path.is_dir():
        where = "params key 'data.mirror'" if cfg.mirror else "GPTPIPE_MIRROR"
        raise BadInput(f"{where}: {path}: mirror folder not found")
    return path


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
    sources = {kind: cfg.sources(kind) for kind in KINDS}
    how = {kind: check_source(kind, sources[kind], f"data.{kind}", table) for kind in KINDS}
    mirror = _mirror_folder(cfg) if "named" in how.values() else None

    cache: list[StdlibBuild] = []

    def stdlib() -> StdlibBuild:
        if not cache:
            cache.append(build_stdlib())
        return cache[0]

    options = FetchOptions(cfg.timeout, cfg.retries, cfg.max_bytes, backoff)
    provenance: dict[str, Any] = {"gptpipe": __version__}
    with staged_with_details(out, details) as (tmp, new_details):
        tmp.mkdir(mode=0o755)
        work_dir = tmp / ".downloads"
        for kind in KINDS:
            dest = tmp / FILE_NAMES[kind]
            loaded = load_source(
                kind,
                sources[kind],
                f"data.{kind}",
                work_dir,
                dest,
                options,
                mirror=mirror,
                named=table,
                stdlib=stdlib,
            )
            sha, size = sha256_and_size(dest)
            provenance[kind] = {
                **loaded.provenance,
                "output": {"file": FILE_NAMES[kind], "sha256": sha, "bytes": size},
                "counts": loaded.counts,
            }
        shutil.rmtree(work_dir, ignore_errors=True)
        write_json(tmp / _PROVENANCE_FILE, provenance)
        if new_details is not None:
            written = sum(provenance[kind]["output"]["bytes"] for kind in KINDS)
            write_json(new_details, {"bytes": written, "wall_seconds": wall_seconds(started)})
    return provenance


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    out: Annotated[
        Path,
        typer.Option(
            help="Output folder: corpus.txt, instruct.json, classify.tsv, provenance.json."
        ),
    ] = layout.RAW,
    details: StageDetailsOption = None,
) -> None:
    """Download (or build offline) the corpus, instruction and classification data.

    Named sets come from the mirror folder if it has them, else their URLs; sha256 verified.
    A URL or path may name an archive member (data.zip#dir/file.tsv); a list of them is a
    list of mirrors tried in order.

    The default, stdlib, is built offline from this Python's standard library.
    """
    cfg: DataConfig = section("data", params, set_)
    provenance = run(cfg, out, details=details)
    for kind in KINDS:
        entry = provenance[kind]
        summary = ", ".join(f"{k} {v}" for k, v in entry["counts"].items() if k != "labels")
        typer.echo(
            f"{kind}: {entry['source']} -> {out / entry['output']['file']} ({summary})", err=True
        )
