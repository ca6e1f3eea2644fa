"""The offline `stdlib` data set: a corpus, instruction records and labelled texts built from the
text every Python install has (the reference topics in `pydoc_data` and the standard library's
docstrings, read from source with `ast`; nothing is imported). Deterministic for a Python version.
"""

from __future__ import annotations

import ast
import hashlib
import os
import platform
import re
import sysconfig
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gptpipe.progress import progress
from gptpipe.sources.formats import (
    Record,
)
from gptpipe.tokenizer.special import EOT

# --------------------------------------------------------------------------- stdlib builder


def _one_line(text: str) -> str:
    """Tabs and newlines (any run of whitespace) as single spaces, ends stripped."""
    return " ".join(text.split())


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
