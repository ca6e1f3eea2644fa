"""The data sets the pipeline knows by name, the offline `stdlib` builder, and loading a
source of any kind (named set, URL, path, or a list of mirrors) into its normalised file.

Three kinds of data leave the `download` stage (their formats: `gptpipe.formats`):
- corpus: documents of plain text (rendered joined by a line holding only `<|endoftext|>`);
- instruct: Alpaca records {"instruction", "input", "output"};
- classify: (label, text) pairs (rendered as `label<TAB>text` lines).

Named sets pin a file by sha256 and know its canonical URL and license. The default, `stdlib`,
needs no network: it is built from the text every Python install has (the reference topics
in `pydoc_data` and the docstrings of the standard library's source files, read with `ast`,
never imported), so it is byte-identical across runs on the same Python.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import platform
import re
import shutil
import sysconfig
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gptpipe.errors import BadInput
from gptpipe.fetch import (
    Fetched,
    fetch_pinned,
    fetch_source,
    file_url_path,
    source_kind,
    split_member,
)
from gptpipe.formats import (
    NORMALISERS,
    Counts,
    Kind,
    Normaliser,
    Record,
    parse_alpaca,
    parse_tsv,
    parsed,
    write_corpus,
    write_items,
)
from gptpipe.progress import progress
from gptpipe.tokenizer import EOT

KINDS: tuple[Kind, ...] = ("corpus", "instruct", "classify")
STDLIB = "stdlib"


def _one_line(text: str) -> str:
    """Tabs and newlines (any run of whitespace) as single spaces, ends stripped."""
    return " ".join(text.split())


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


# --------------------------------------------------------------------------- stdlib builder

STDLIB_LICENSE = "PSF-2.0 (Python documentation and standard library source)"

# Parts of the standard library tree that hold no useful prose: tests, demos, vendored
# packages, codec tables, the documentation topics (used separately), binary modules.
SKIP_TOP = frozenset(
    {
        "site-packages",
        "dist-packages",
        "test",
        "idlelib",
        "encodings",
        "turtledemo",
        "pydoc_data",
        "ensurepip",
        "__phello__",
        "lib-dynload",
    }
)
SKIP_PART = frozenset({"test", "tests", "__pycache__", "_bundled"})
SELF_NAMES = frozenset({"self", "cls", "mcs", "mcls", "metacls"})
MIN_DOC_CHARS = 30

# Area of the library each top-level module belongs to: the labels of the classification set.
AREA_TABLE = """
text: string re textwrap difflib unicodedata stringprep codecs html xml gettext locale shlex
text: pprint reprlib tokenize token keyword _markupbase sre_parse sre_compile sre_constants
data: json csv pickle pickletools copyreg shelve dbm sqlite3 collections _collections_abc
data: dataclasses enum datetime _strptime calendar zoneinfo decimal _pydecimal fractions
data: numbers statistics random heapq bisect copy struct zipfile tarfile gzip bz2 lzma
data: configparser plistlib base64 binascii quopri uu hashlib hmac secrets tomllib graphlib
data: xdrlib chunk wave aifc sunau
network: socket ssl http urllib email smtplib smtpd imaplib poplib ftplib nntplib telnetlib
network: mailbox mailcap mimetypes xmlrpc socketserver ipaddress wsgiref webbrowser cgi cgitb
network: netrc asynchat asyncore
system: os posixpath ntpath genericpath shutil pathlib glob fnmatch tempfile subprocess
system: platform stat filecmp fileinput io _pyio signal logging argparse optparse getopt
system: sysconfig site importlib pkgutil zipimport getpass pty tty trace bdb pdb cProfile
system: profile pstats timeit runpy modulefinder compileall py_compile venv zipapp
concurrency: threading _threading_local multiprocessing concurrent asyncio queue sched selectors
"""
AREA_OF: dict[str, str] = {
    module: area.strip()
    for area, _, modules in (line.partition(":") for line in AREA_TABLE.strip().splitlines())
    for module in modules.split()
}
CLASSIFY_CAP_PER_LABEL = 500
CLASSIFY_MAX_CHARS = 400
INSTRUCT_CAP = 2000
INSTRUCT_MAX_CHARS = 400


@dataclass(frozen=True)
class DocEntry:
    """One docstring of the standard library."""

    module: str
    qualname: str  # "" for the module itself
    kind: Literal["module", "class", "function", "method"]
    signature: str  # "(a, b=1)" for functions, "(Base)" for classes, "" for modules
    doc: str

    @property
    def name(self) -> str:
        return f"{self.module}.{self.qualname}" if self.qualname else self.module

    @property
    def public(self) -> bool:
        parts = [*self.module.split("."), *self.qualname.split(".")]
        return not any(p.startswith("_") for p in parts if p)


@dataclass
class StdlibBuild:
    """The three data sets built from the standard library, with a fingerprint of the inputs."""

    corpus: list[str]
    instruct: list[Record]
    classify: list[tuple[str, str]]
    upstream: dict[str, Any] = field(default_factory=dict)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path) -> list[Path]:
    """The standard library's .py files worth reading, in a fixed (sorted) order."""
    found: list[str] = []
    for folder, dirnames, filenames in os.walk(root):
        rel = Path(folder).relative_to(root)
        top = not rel.parts
        dirnames[:] = [
            d
            for d in dirnames
            if d not in SKIP_PART
            and not (top and (d in SKIP_TOP or d.startswith("config-") or "-" in d))
        ]
        found.extend(
            (rel / name).as_posix()
            for name in filenames
            if name.endswith(".py") and not name.startswith(("test_", "_sysconfigdata"))
        )
    return [root / rel for rel in sorted(found)]


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def clean_doc(doc: str) -> str:
    """A dedented docstring with trailing spaces, form feeds and runs of blank lines removed."""
    doc = doc.replace("\f", "").replace("\v", "").replace("\t", "    ").replace(EOT, "")
    doc = "\n".join(line.rstrip() for line in doc.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", doc).strip("\n")


def paragraphs(doc: str) -> list[str]:
    """Paragraphs as single lines; a word hyphenated across a line break is joined again."""
    return [_one_line(re.sub(r"(\w)-\n\s*(\w)", r"\1-\2", p)) for p in doc.strip().split("\n\n")]


def first_paragraph(doc: str) -> str:
    return paragraphs(doc)[0]


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef, in_class: bool) -> str:
    args = node.args
    if in_class and not any(
        isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list
    ):
        positional = args.posonlyargs or args.args
        if positional and positional[0].arg in SELF_NAMES:
            args = ast.arguments(
                posonlyargs=args.posonlyargs[1:] if args.posonlyargs else [],
                args=args.args if args.posonlyargs else args.args[1:],
                vararg=args.vararg,
                kwonlyargs=args.kwonlyargs,
                kw_defaults=args.kw_defaults,
                kwarg=args.kwarg,
                defaults=args.defaults,
            )
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    return f"({ast.unparse(args)}){returns}"


def _definitions(
    body: list[ast.stmt], module: str, prefix: str, in_class: bool
) -> Iterator[DocEntry]:
    """Public classes, functions and methods with a docstring, in source order."""
    for node in body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if node.name.startswith("_"):
            continue
        qualname = f"{prefix}{node.name}"
        doc = ast.get_docstring(node, clean=True)
        if isinstance(node, ast.ClassDef):
            if doc and len(doc) >= MIN_DOC_CHARS:
                bases = ", ".join(ast.unparse(b) for b in node.bases)
                yield DocEntry(
                    module, qualname, "class", f"({bases})" if bases else "", clean_doc(doc)
                )
            yield from _definitions(node.body, module, f"{qualname}.", True)
        elif doc and len(doc) >= MIN_DOC_CHARS:
            kind: Literal["function", "method"] = "method" if in_class else "function"
            yield DocEntry(module, qualname, kind, _signature(node, in_class), clean_doc(doc))


def module_entries(source: bytes, module: str) -> list[DocEntry]:
    """The module docstring and the docstrings of its public definitions (none if unparsable)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return []
    entries = []
    doc = ast.get_docstring(tree, clean=True)
    if doc and len(doc) >= MIN_DOC_CHARS:
        entries.append(DocEntry(module, "", "module", "", clean_doc(doc)))
    entries.extend(_definitions(tree.body, module, "", False))
    return entries


def _heading(entry: DocEntry) -> str:
    if entry.kind == "module":
        return f"Module {entry.module}"
    if entry.kind == "class":
        return f"class {entry.name}{entry.signature}"
    return f"{entry.name}{entry.signature}"


def module_document(entries: Sequence[DocEntry], seen: set[str]) -> str:
    """One corpus document per module: each docstring under a heading, duplicates left out."""
    parts = []
    for entry in entries:
        if entry.doc in seen:
            continue
        seen.add(entry.doc)
        parts.append(f"{_heading(entry)}\n{entry.doc}")
    return "\n\n".join(parts)


def _topic_title_and_text(text: str) -> tuple[str, str]:
    """A pydoc topic's title (first line, above its underline) and its body."""
    lines = text.split("\n")
    if len(lines) > 2 and lines[1].strip() and set(lines[1].strip()) <= set("*=-"):
        return lines[0].strip(), "\n".join(lines[2:]).strip("\n")
    return "", text


def _stable_key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _fits(paragraph: str, max_chars: int) -> bool:
    """A self-contained sentence-like paragraph: not a signature, list intro or doctest."""
    return (
        20 <= len(paragraph) <= max_chars
        and " " in paragraph
        and paragraph[0].isalpha()
        and not paragraph.endswith(":")
        and ">>>" not in paragraph
        and "::=" not in paragraph
    )


def instruct_records(entries: Sequence[DocEntry], topics: dict[str, str]) -> list[Record]:
    """Alpaca records: describe a function, method, class, module or language topic."""
    candidates: list[Record] = []
    for entry in entries:
        answer = first_paragraph(entry.doc)
        if not entry.public or not _fits(answer, INSTRUCT_MAX_CHARS):
            continue
        short = entry.qualname.rsplit(".", 1)[-1]
        if entry.kind == "module":
            instruction = f"Summarise what the Python module `{entry.module}` is for."
            given = ""
        elif entry.kind == "class":
            instruction = f"Explain the purpose of the Python class `{entry.name}`."
            given = f"class {short}{entry.signature}"
        elif entry.kind == "method":
            instruction = f"Describe what the method `{entry.name}` does."
            given = f"{short}{entry.signature}"
        else:
            instruction = f"Describe what the Python function `{entry.name}` does."
            given = f"{short}{entry.signature}"
        candidates.append({"instruction": instruction, "input": given, "output": answer})
    for key in sorted(topics):
        title, body = _topic_title_and_text(topics[key])
        # The first paragraph of prose (topics often open with a grammar rule).
        answer = next((p for p in paragraphs(body) if _fits(p, INSTRUCT_MAX_CHARS * 2)), "")
        if title and answer:
            candidates.append(
                {
                    "instruction": "Explain this part of the Python language reference.",
                    "input": title,
                    "output": answer,
                }
            )
    unique: dict[str, Record] = {}
    for record in candidates:
        unique.setdefault(record["output"], record)
    ordered = sorted(unique.values(), key=lambda r: _stable_key(r["instruction"], r["input"]))
    return ordered[:INSTRUCT_CAP]


def classify_rows(entries: Sequence[DocEntry]) -> list[tuple[str, str]]:
    """(area, first paragraph) pairs, at most CLASSIFY_CAP_PER_LABEL per area."""
    labels_of: dict[str, set[str]] = {}
    for entry in entries:
        area = AREA_OF.get(entry.module.split(".")[0])
        text = first_paragraph(entry.doc)
        if area and _fits(text, CLASSIFY_MAX_CHARS):
            labels_of.setdefault(text, set()).add(area)
    # A text found in two areas says nothing about either: leave it out.
    rows = [(next(iter(areas)), text) for text, areas in labels_of.items() if len(areas) == 1]
    rows.sort(key=lambda row: _stable_key(*row))
    taken: Counter[str] = Counter()
    selected = []
    for label, text in rows:
        if taken[label] < CLASSIFY_CAP_PER_LABEL:
            taken[label] += 1
            selected.append((label, text))
    return selected


def build_stdlib(root: Path | None = None, topics: dict[str, str] | None = None) -> StdlibBuild:
    """Build the corpus, instruction and classification sets from the standard library.

    Deterministic for a given Python: files are read in sorted order, nothing is imported
    but `pydoc_data.topics`, and every selection is by a stable hash.
    """
    root = stdlib_root() if root is None else root
    if topics is None:
        from pydoc_data.topics import topics as pydoc_topics

        topics = dict(pydoc_topics)
    fingerprint = hashlib.sha256()
    total_bytes = 0
    entries: list[DocEntry] = []
    docs: list[str] = []
    seen: set[str] = set()
    for key in sorted(topics):
        text = clean_doc(topics[key])
        fingerprint.update(f"topic:{key}\n{topics[key]}\n".encode())
        if text and text not in seen:
            seen.add(text)
            docs.append(text)
    files = stdlib_files(root)
    with progress() as bar:
        task = bar.add_task("read stdlib docstrings", total=len(files))
        for path in files:
            source = path.read_bytes()
            name = module_name(root, path)
            fingerprint.update(f"file:{name}\n".encode() + hashlib.sha256(source).digest())
            total_bytes += len(source)
            found = module_entries(source, name)
            entries.extend(found)
            document = module_document(found, seen)
            if document:
                docs.append(document)
            bar.advance(task)
    return StdlibBuild(
        corpus=docs,
        instruct=instruct_records(entries, topics),
        classify=classify_rows(entries),
        upstream={
            "python": platform.python_version(),
            "stdlib": str(root),
            "files": len(files),
            "topics": len(topics),
            "sha256": fingerprint.hexdigest(),
            "bytes": total_bytes,
        },
    )


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


def check_source(
    kind: Kind, source: str | Sequence[str], key: str, named: dict[str, NamedSet] | None = None
) -> str:
    """Validate a source before anything is fetched: 'stdlib', 'named', 'url', 'file', 'path',
    or 'mirrors' for a list of several URLs or paths of one file (tried in order when fetched,
    so a local path missing from the list is not an error yet; a bad scheme or a named set in
    the list is)."""
    table = NAMED_SETS if named is None else named
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


@dataclass(frozen=True)
class FetchOptions:
    """How sources are fetched: `data.timeout`, `data.retries`, `data.max_bytes`, and the
    first retry's delay (tests shorten it)."""

    timeout: float
    retries: int
    max_bytes: int | None = None
    backoff: float = 1.0

    def kwargs(self) -> dict[str, Any]:
        return {
            "timeout": self.timeout,
            "retries": self.retries,
            "backoff": self.backoff,
            "max_bytes": self.max_bytes,
        }


def _upstream(fetched: Fetched) -> dict[str, Any]:
    upstream: dict[str, Any] = {"sha256": fetched.sha256, "bytes": fetched.bytes}
    if fetched.archive:
        upstream["archive"] = fetched.archive
    return upstream


def _load_first(
    kind: Kind, sources: list[str], key: str, work_dir: Path, dest: Path, options: FetchOptions
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
            fetched = fetch_source(source, item_key, scratch, **options.kwargs())
            return fetched, NORMALISERS[kind](fetched.path, fetched.location, dest)
        except BadInput as exc:
            if len(sources) == 1:
                raise
            errors.append(str(exc).removeprefix(f"params key '{item_key}': "))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    raise BadInput(
        f"params key '{key}': none of the {len(sources)} mirrors worked: " + "; ".join(errors)
    )


def load_source(
    kind: Kind,
    source: str | Sequence[str],
    key: str,
    work_dir: Path,
    dest: Path,
    options: FetchOptions,
    *,
    mirror: Path | None,
    named: dict[str, NamedSet] | None = None,
    stdlib: Callable[[], StdlibBuild] = build_stdlib,
) -> Loaded:
    """Fetch (or build) one source and write it, normalised to `kind`, as the file `dest`.

    `work_dir` receives downloads (emptied again before returning); `stdlib` builds the
    offline default (pass a cached one to build it once for several kinds); `named` replaces
    the table of named sets. Nothing is left at `dest` unless the whole source loads.
    """
    table = NAMED_SETS if named is None else named
    sources = as_list(source)
    how = check_source(kind, sources, key, table)
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
        fetched, counts = _load_first(kind, sources, key, work_dir, dest, options)
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
                archive_name=pinned.archive_name,
                **options.kwargs(),
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
