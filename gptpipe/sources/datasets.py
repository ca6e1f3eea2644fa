"""The data sets the pipeline knows by name, the offline `stdlib` builder, and loading a
source of any kind (named set, URL, path, or a list of mirrors) into its normalised file.

Three kinds of data leave the `download` stage (their formats: `gptpipe.sources.formats`):
- corpus: documents of plain text (rendered joined by a line holding only `<|endoftext|>`);
- instruct: Alpaca records {"instruction", "input", "output"};
- classify: (label, text) pairs (rendered as `label<TAB>text` lines).

Named sets pin a file by sha256 and know its canonical URL and license. The default, `stdlib`,
needs no network: it is built from the text every Python install has (the reference topics
in `pydoc_data` and the docstrings of the standard library's source files, read with `ast`,
never imported), so it is byte-identical across runs on the same Python.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptpipe.errors import BadInput
from gptpipe.sources.fetch import (
    Fetched,
    FetchOptions,
    fetch_pinned,
    fetch_source,
    file_url_path,
    source_kind,
    split_member,
)
from gptpipe.sources.formats import (
    DEFAULT_FIELDS,
    Counts,
    Fields,
    Kind,
    Normaliser,
    parse_alpaca,
    parse_tsv,
    parsed,
    write_corpus,
    write_items,
)
from gptpipe.sources.many import (
    FileList,
    check_entry,
    expand_all,
    local_many,
    write_corpus_files,
)
from gptpipe.sources.readers import normalise
from gptpipe.sources.stdlib import (
    STDLIB_LICENSE,
    StdlibBuild,
    build_stdlib,
)

KINDS: tuple[Kind, ...] = ("corpus", "instruct", "classify")
STDLIB = "stdlib"


FILE_NAMES: dict[Kind, str] = {
    "corpus": "corpus.txt",
    "instruct": "instruct.json",
    "classify": "classify.tsv",
}


# --------------------------------------------------------------------------- named sets


@dataclass(frozen=True)
class NamedSet:
    """A public data set pinned by the sha256 of its file (of the member, when zipped)."""

    name: str
    kind: Kind
    file_name: str  # looked for in the mirror folder by this name
    sha256: str
    urls: tuple[str, ...]
    license: str
    normalise: Normaliser  # reads the pinned file, writes the kind's normalised file
    archive_name: str | None = None  # the URLs serve this zip/tar/gzip, holding `file_name`
    description: str = ""


NAMED_SETS: dict[str, NamedSet] = {
    s.name: s
    for s in (
        NamedSet(
            name="tinyshakespeare",
            kind="corpus",
            file_name="tinyshakespeare.txt",
            sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            urls=(
                "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                "tinyshakespeare/input.txt",
            ),
            license="public domain text",
            normalise=functools.partial(write_corpus, one_document=True),
            description="Tiny Shakespeare, 1,115,394 bytes, one document",
        ),
        NamedSet(
            name="alpaca-instructions",
            kind="instruct",
            file_name="instruction-data.json",
            sha256="7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
            urls=(
                "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/"
                "01_main-chapter-code/instruction-data.json",
            ),
            license="Apache-2.0 (repository)",
            normalise=parsed("instruct", parse_alpaca),
            description="1,100 Alpaca-format instruction records",
        ),
        NamedSet(
            name="sms-spam",
            kind="classify",
            file_name="SMSSpamCollection",
            sha256="7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
            urls=("https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",),
            license="CC BY 4.0",
            normalise=parsed("classify", parse_tsv),
            archive_name="sms+spam+collection.zip",
            description="UCI SMS Spam Collection, 5,574 lines, ham/spam",
        ),
    )
}


def allowed_names(kind: Kind, named: dict[str, NamedSet] | None = None) -> list[str]:
    """The names a params key of this kind accepts."""
    table = NAMED_SETS if named is None else named
    return [STDLIB] + [name for name, s in table.items() if s.kind == kind]


# --------------------------------------------------------------------------- sources


@dataclass
class Loaded:
    """One kind's normalised file: where it came from and what it holds (for provenance)."""

    kind: Kind
    provenance: dict[str, Any]
    counts: Counts


def named_set(kind: Kind, source: str, key: str, named: dict[str, NamedSet]) -> NamedSet | None:
    """The named set `source` names, if any; a set of another kind is bad input."""
    found = named.get(source)
    if found is None:
        return None
    if found.kind != kind:
        raise BadInput(
            f"params key '{key}': {source!r} is a {found.kind} data set, not a {kind} one; "
            f"allowed names: {', '.join(allowed_names(kind, named))} (or a URL or path)"
        )
    return found


def as_list(source: str | Sequence[str]) -> list[str]:
    """A source as given in params (one, or a list of mirrors) as a list of stripped strings."""
    return [item.strip() for item in ([source] if isinstance(source, str) else source)]


def _check_one(kind: Kind, source: str, key: str, table: dict[str, NamedSet]) -> str:
    if source == STDLIB:
        return STDLIB
    if named_set(kind, source, key, table):
        return "named"
    found = source_kind(source, key)
    many = local_many(source)
    if many is not None:
        if kind != "corpus":
            raise BadInput(
                f"params key '{key}': {source} is a {many}; only data.corpus reads many files, "
                "give one file"
            )
        check_entry(source, key)
        return many
    base, _ = split_member(source, found)
    if found == "path" and not Path(base).expanduser().exists():
        looks_like_path = any(c in source for c in "/\\.~")
        if not looks_like_path:
            raise BadInput(
                f"params key '{key}': unknown data set {source!r}; "
                f"allowed names: {', '.join(allowed_names(kind, table))} (or a URL or path)"
            )
        raise BadInput(f"params key '{key}': {base}: file not found")
    if found == "file" and not file_url_path(base).is_file():
        raise BadInput(f"params key '{key}': {base}: file not found")
    return found


Source = str | Sequence[str] | FileList


def check_source(
    kind: Kind, source: Source, key: str, named: dict[str, NamedSet] | None = None
) -> str:
    """Validate a source before anything is fetched: 'stdlib', 'named', 'url', 'file', 'path',
    'glob' or 'folder' (a corpus of the local files they name), 'files' (a `FileList`: a
    corpus of every file listed, each of which must exist or be a URL), or 'mirrors' for a
    list of several URLs or paths of one file (tried in order when fetched, so a local path
    missing from the list is not an error yet; a bad scheme or a named set in the list is)."""
    table = NAMED_SETS if named is None else named
    if isinstance(source, FileList):
        return _check_files(kind, source, key, table)
    sources = as_list(source)
    if len(sources) == 1:
        return _check_one(kind, sources[0], key, table)
    for i, item in enumerate(sources):
        if item == STDLIB or item in table:
            raise BadInput(
                f"params key '{key}[{i}]': a list holds mirrors (URLs or paths) of one file; "
                f"{item!r} is a named data set, give it alone"
            )
        source_kind(item, f"{key}[{i}]")
    return "mirrors"


def _check_files(kind: Kind, source: FileList, key: str, table: dict[str, NamedSet]) -> str:
    if kind != "corpus":
        raise BadInput(f"params key '{key}': a list of files is only read for data.corpus")
    for i, item in enumerate(as_list(source.files)):
        item_key = f"{key}.files[{i}]"
        if item == STDLIB or item in table:
            raise BadInput(
                f"params key '{item_key}': {item!r} is a named data set; files lists hold URLs "
                "and paths"
            )
        check_entry(item, item_key)
    return "files"


def _upstream(fetched: Fetched) -> dict[str, Any]:
    upstream: dict[str, Any] = {"sha256": fetched.sha256, "bytes": fetched.bytes}
    if fetched.archive:
        upstream["archive"] = fetched.archive
    return upstream


def _load_first(
    kind: Kind,
    sources: list[str],
    key: str,
    work_dir: Path,
    dest: Path,
    options: FetchOptions,
    fields: Fields = DEFAULT_FIELDS,
) -> tuple[Fetched, Counts]:
    """Fetch and normalise the first source that works: a list holds mirrors of one file, so
    one that cannot be fetched, or that turns out not to be valid data of its kind (a 404, a
    stall, an HTML page, a bad archive, malformed rows), gives way to the next. Each try's
    downloads are removed once it is done; only `dest` stays."""
    errors = []
    for i, source in enumerate(sources):
        item_key = key if len(sources) == 1 else f"{key}[{i}]"
        scratch = work_dir / f"source-{i}"
        try:
            fetched = fetch_source(source, item_key, scratch, options)
            return fetched, normalise(kind, fetched.path, fetched.location, dest, fields)
        except BadInput as exc:
            if len(sources) == 1:
                raise
            errors.append(str(exc).removeprefix(f"params key '{item_key}': "))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    raise BadInput(
        f"params key '{key}': none of the {len(sources)} mirrors worked: " + "; ".join(errors)
    )


def _load_many(
    source: str | FileList,
    how: str,
    key: str,
    work_dir: Path,
    dest: Path,
    options: FetchOptions,
    fields: Fields,
) -> Loaded:
    """A corpus of many files (a glob, a folder or a FileList), each one's provenance kept."""
    if isinstance(source, FileList):
        files = expand_all(as_list(source.files), f"{key}.files")
        given: Any = {"files": list(source.files)}
    else:
        files, given = expand_all([source], key), source
    try:
        entries, counts = write_corpus_files(
            files, work_dir / "files", dest, options, fields=fields, key=key
        )
    finally:
        shutil.rmtree(work_dir / "files", ignore_errors=True)
    return Loaded(
        "corpus",
        {
            "source": given,
            "type": how,
            "location": given,
            "license": "unknown (given by URL or path)",
            "upstream": {"bytes": sum(e["bytes"] for e in entries), "files": entries},
        },
        counts,
    )


def load_source(
    kind: Kind,
    source: Source,
    key: str,
    work_dir: Path,
    dest: Path,
    options: FetchOptions,
    *,
    mirror: Path | None,
    named: dict[str, NamedSet] | None = None,
    stdlib: Callable[[], StdlibBuild] = build_stdlib,
    fields: Fields = DEFAULT_FIELDS,
) -> Loaded:
    """Fetch (or build) one source and write it, normalised to `kind`, as the file `dest`.

    `work_dir` receives downloads (emptied again before returning); `stdlib` builds the
    offline default (pass a cached one to build it once for several kinds); `named` replaces
    the table of named sets; `fields` says where records keep their fields. Nothing is left
    at `dest` unless the whole source loads.
    """
    table = NAMED_SETS if named is None else named
    how = check_source(kind, source, key, table)
    if how in ("glob", "folder", "files"):
        many = source if isinstance(source, FileList) else as_list(source)[0]
        return _load_many(many, how, key, work_dir, dest, options, fields)
    assert not isinstance(source, FileList)
    sources = as_list(source)
    given: str | list[str] = sources[0] if len(sources) == 1 else sources
    if how == STDLIB:
        build = stdlib()
        return Loaded(
            kind,
            {
                "source": STDLIB,
                "type": STDLIB,
                "location": f"Python {build.upstream['python']} standard library and pydoc topics",
                "license": STDLIB_LICENSE,
                "upstream": build.upstream,
            },
            write_items(kind, getattr(build, kind), dest),
        )
    pinned = named_set(kind, sources[0], key, table) if how == "named" else None
    if pinned is None:
        fetched, counts = _load_first(kind, sources, key, work_dir, dest, options, fields)
        license_ = "unknown (given by URL or path)"
        upstream = _upstream(fetched)
    else:
        scratch = work_dir / "pinned"
        try:
            fetched = fetch_pinned(
                pinned.file_name,
                pinned.urls,
                pinned.sha256,
                scratch,
                mirror=mirror,
                options=options,
                archive_name=pinned.archive_name,
            )
            counts = pinned.normalise(fetched.path, fetched.location, dest)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        license_ = pinned.license
        upstream = {**_upstream(fetched), "pinned_sha256": pinned.sha256}
    return Loaded(
        kind,
        {
            "source": given,
            "type": how,
            "location": fetched.location,
            "license": license_,
            "upstream": upstream,
        },
        counts,
    )
