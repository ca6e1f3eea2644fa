"""Normalisers, named sets and the offline `stdlib` builder."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from gptpipe.errors import BadInput
from gptpipe.sources import datasets
from gptpipe.sources.datasets import NAMED_SETS, check_source, load_source
from gptpipe.sources.fetch import FetchOptions
from gptpipe.sources.formats import INSTRUCT_KEYS, counts, parse_tsv, parsed, render_dataset
from gptpipe.sources.stdlib import (
    AREA_OF,
    CLASSIFY_CAP_PER_LABEL,
    StdlibBuild,
    build_stdlib,
    classify_rows,
    instruct_records,
    module_entries,
    stdlib_files,
    stdlib_root,
)
from gptpipe.tokenizer.special import EOT

# --------------------------------------------------------------------------- named sets


def test_named_sets_pin_kind_file_hash_url_and_license():
    assert {n: s.kind for n, s in NAMED_SETS.items()} == {
        "tinyshakespeare": "corpus",
        "alpaca-instructions": "instruct",
        "sms-spam": "classify",
    }
    for named in NAMED_SETS.values():
        assert len(named.sha256) == 64 and int(named.sha256, 16) >= 0
        assert named.urls and all(u.startswith("https://") for u in named.urls)
        assert named.license and named.file_name
    assert NAMED_SETS["sms-spam"].archive_name == "sms+spam+collection.zip"


@pytest.mark.parametrize(
    ("kind", "source", "message"),
    [
        (
            "corpus",
            "sms-spam",
            "'sms-spam' is a classify data set.*allowed names: stdlib, tinyshakespeare",
        ),
        ("classify", "tinyshakespeare", ".*allowed names: stdlib, sms-spam"),
        (
            "instruct",
            "alpacca",
            "unknown data set 'alpacca'; allowed names: stdlib, alpaca-instructions",
        ),
        ("corpus", "gopher://x/y", "unsupported URL scheme 'gopher'"),
        ("corpus", "data/none.txt", "data/none.txt: file not found"),
        ("corpus", "file:///no/such/file.txt", "file:///no/such/file.txt: file not found"),
    ],
)
def test_bad_sources_are_bad_input_naming_the_key(kind, source, message):
    with pytest.raises(BadInput, match=rf"^params key 'data\.{kind}': {message}"):
        check_source(kind, source, f"data.{kind}")


def test_good_sources_are_recognised(tmp_path):
    (tmp_path / "c.txt").write_text("x")
    assert check_source("corpus", "stdlib", "k") == "stdlib"
    assert check_source("corpus", "tinyshakespeare", "k") == "named"
    assert check_source("corpus", "https://example.org/c.txt", "k") == "url"
    assert check_source("corpus", (tmp_path / "c.txt").as_uri(), "k") == "file"
    assert check_source("corpus", str(tmp_path / "c.txt"), "k") == "path"
    (tmp_path / "c.zip").write_bytes(b"")
    assert check_source("corpus", f"{tmp_path / 'c.zip'}#dir/c.txt", "k") == "path"
    assert check_source("corpus", ["https://example.org/c.txt"], "k") == "url"  # a list of one
    mirrors = ["https://example.org/c.txt", "absent/c.txt", (tmp_path / "c.txt").as_uri()]
    assert check_source("corpus", mirrors, "k") == "mirrors"  # missing mirrors: checked later


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        (["a.txt", "stdlib"], r"'k\[1\]': a list holds mirrors .* 'stdlib' is a named data set"),
        (["tinyshakespeare", "a.txt"], r"'k\[0\]': a list holds mirrors"),
        (["a.txt", "s3://b/a.txt"], r"'k\[1\]': unsupported URL scheme 's3'"),
        ([" missing/a.zip#a.txt "], r"'k': missing/a\.zip: file not found"),
    ],
)
def test_bad_source_lists_are_bad_input_naming_the_item(sources, message):
    with pytest.raises(BadInput, match=rf"^params key {message}"):
        check_source("corpus", sources, "k")


def test_a_named_set_may_ship_inside_a_tar_gz(tmp_path):
    """The archive of a named set is found in the mirror folder; its member is what is pinned."""
    data = b"ham\tok then\nspam\tfree prize\n"
    with tarfile.open(tmp_path / "mini.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("mini-1.0/mini.tsv")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    table = {
        "mini": datasets.NamedSet(
            name="mini",
            kind="classify",
            file_name="mini.tsv",
            sha256=hashlib.sha256(data).hexdigest(),
            urls=(),
            license="CC0",
            normalise=parsed("classify", parse_tsv),
            archive_name="mini.tar.gz",
        )
    }
    work, dest = tmp_path / "work", tmp_path / "out.tsv"
    loaded = load_source(
        "classify", "mini", "k", work, dest, FetchOptions(1, 1), mirror=tmp_path, named=table
    )
    assert dest.read_text() == "ham\tok then\nspam\tfree prize\n"
    assert loaded.counts == {"lines": 2, "labels": {"ham": 1, "spam": 1}}
    assert loaded.provenance["location"].endswith("mini.tar.gz#mini-1.0/mini.tsv")
    assert loaded.provenance["upstream"]["sha256"] == table["mini"].sha256


def test_named_set_from_a_mirror_is_verified_and_normalised(tmp_path):
    data = b"ham\tok then\nspam\tfree prize\n"
    table = {
        "mini": datasets.NamedSet(
            name="mini",
            kind="classify",
            file_name="mini.tsv",
            sha256=hashlib.sha256(data).hexdigest(),
            urls=(),
            license="CC0",
            normalise=parsed("classify", parse_tsv),
        )
    }
    (tmp_path / "mini.tsv").write_bytes(data)
    work, dest = tmp_path / "work", tmp_path / "out.tsv"
    options = FetchOptions(1, 1)
    loaded = load_source(
        "classify", "mini", "data.classify", work, dest, options, mirror=tmp_path, named=table
    )
    assert dest.read_text() == "ham\tok then\nspam\tfree prize\n"
    assert loaded.provenance["type"] == "named" and loaded.provenance["license"] == "CC0"
    assert loaded.provenance["upstream"]["sha256"] == table["mini"].sha256
    (tmp_path / "mini.tsv").write_bytes(data + b"ham\tmore\n")
    with pytest.raises(BadInput, match=r"mini\.tsv: sha256 mismatch"):
        load_source(
            "classify", "mini", "data.classify", work, dest, options, mirror=tmp_path, named=table
        )


# --------------------------------------------------------------------------- stdlib builder

SOURCE = b'''"""Tools for making and managing widgets.

Longer description of the widget module.
"""

def make_widget(name, *, size=3):
    """Create a new widget called name, of the given size.

    More details.
    """

def _private(x):
    """A private helper that is never listed anywhere."""

class Widget(Base):
    """A widget that can be turned on and off as needed."""

    def turn_on(self, level=1):
        """Switch the widget on, at the given level."""

    @staticmethod
    def count(self_like):
        """Count the widgets that exist right now in the world."""

    def tiny(self):
        """Short."""
'''


def test_module_entries_are_public_definitions_with_their_signatures():
    entries = module_entries(SOURCE, "widgets")
    assert [(e.kind, e.name, e.signature) for e in entries] == [
        ("module", "widgets", ""),
        ("function", "widgets.make_widget", "(name, *, size=3)"),
        ("class", "widgets.Widget", "(Base)"),
        ("method", "widgets.Widget.turn_on", "(level=1)"),
        ("method", "widgets.Widget.count", "(self_like)"),
    ]
    assert entries[1].doc == "Create a new widget called name, of the given size.\n\nMore details."
    assert module_entries(b"def broken(:\n", "bad") == []


def test_instruction_records_describe_each_definition():
    records = instruct_records(module_entries(SOURCE, "widgets"), {})
    by_instruction = {r["instruction"]: r for r in records}
    assert by_instruction["Describe what the Python function `widgets.make_widget` does."] == {
        "instruction": "Describe what the Python function `widgets.make_widget` does.",
        "input": "make_widget(name, *, size=3)",
        "output": "Create a new widget called name, of the given size.",
    }
    assert by_instruction["Explain the purpose of the Python class `widgets.Widget`."]["input"] == (
        "class Widget(Base)"
    )
    assert by_instruction["Summarise what the Python module `widgets` is for."]["output"] == (
        "Tools for making and managing widgets."
    )
    assert len(records) == 5 and not any("_private" in r["instruction"] for r in records)


def test_classify_rows_label_by_area_and_drop_ambiguous_texts():
    json_entries = module_entries(SOURCE, "json.widgets")
    socket_entries = module_entries(SOURCE.replace(b"Tools for", b"Sockets for"), "socket")
    rows = classify_rows(json_entries + socket_entries + module_entries(SOURCE, "nomodule"))
    # Only the module docstrings differ between the two areas; the rest is ambiguous.
    assert sorted(rows) == [
        ("data", "Tools for making and managing widgets."),
        ("network", "Sockets for making and managing widgets."),
    ]
    assert AREA_OF["json"] == "data" and AREA_OF["asyncio"] == "concurrency"


@pytest.fixture(scope="session")
def stdlib_build() -> StdlibBuild:
    return build_stdlib()


def test_stdlib_files_skip_tests_and_vendored_code():
    root = stdlib_root()
    rel = [p.relative_to(root).as_posix() for p in stdlib_files(root)]
    assert "json/__init__.py" in rel and "asyncio/tasks.py" in rel
    assert not any(r.startswith(("test/", "site-packages/", "idlelib/", "encodings/")) for r in rel)
    assert not any("/tests/" in r or "/test/" in r for r in rel)
    assert rel == sorted(rel)


def test_stdlib_corpus_is_a_few_megabytes_of_documents(stdlib_build):
    text = render_dataset("corpus", stdlib_build.corpus)
    assert 1_500_000 < len(text.encode()) < 5_000_000
    assert len(stdlib_build.corpus) > 300
    assert all(
        EOT not in doc and doc.strip() == doc.strip("\n").strip() for doc in stdlib_build.corpus
    )
    assert any(
        doc.startswith("Module json\nJSON (JavaScript Object Notation)")
        for doc in stdlib_build.corpus
    )
    assert any(doc.startswith('The "assert" statement') for doc in stdlib_build.corpus)


def test_stdlib_instructions_are_alpaca_records(stdlib_build):
    records = stdlib_build.instruct
    assert 1000 <= len(records) <= 3000
    for record in records:
        assert list(record) == list(INSTRUCT_KEYS)
        assert record["instruction"].strip() and 20 <= len(record["output"]) <= 800
    assert len({r["output"] for r in records}) == len(records)


def test_stdlib_classification_is_balanced_over_the_areas(stdlib_build):
    rows = stdlib_build.classify
    by_label = counts("classify", rows)["labels"]
    assert set(by_label) == {"text", "data", "network", "system", "concurrency"}
    assert max(by_label.values()) <= CLASSIFY_CAP_PER_LABEL
    assert min(by_label.values()) >= CLASSIFY_CAP_PER_LABEL // 2
    assert 1000 <= len(rows) <= 3000
    assert all(len(text) <= 400 and "\t" not in text and "\n" not in text for _, text in rows)
    assert len({text for _, text in rows}) == len(rows)


def test_stdlib_build_is_byte_identical_across_runs(stdlib_build):
    again = build_stdlib()
    for kind in ("corpus", "instruct", "classify"):
        first = hashlib.sha256(
            render_dataset(kind, getattr(stdlib_build, kind)).encode()
        ).hexdigest()
        second = hashlib.sha256(render_dataset(kind, getattr(again, kind)).encode()).hexdigest()
        assert first == second, kind
    assert again.upstream == stdlib_build.upstream
    assert stdlib_build.upstream["sha256"] and stdlib_build.upstream["files"] > 300


def test_stdlib_upstream_fingerprint_follows_the_sources(tmp_path):
    pkg = tmp_path / "lib"
    (pkg / "json").mkdir(parents=True)
    (pkg / "json" / "__init__.py").write_bytes(SOURCE)
    (pkg / "test").mkdir()
    (pkg / "test" / "test_x.py").write_bytes(SOURCE)
    topics = {"t": "Title\n*****\n\nA topic about something in the language."}
    first = build_stdlib(pkg, topics)
    assert first.upstream["files"] == 1 and first.upstream["topics"] == 1
    assert first.corpus[0] == topics["t"] and first.corpus[1].startswith("Module json\nTools")
    (pkg / "json" / "__init__.py").write_bytes(SOURCE.replace(b"Tools", b"Gadgets"))
    second = build_stdlib(Path(pkg), topics)
    assert second.upstream["sha256"] != first.upstream["sha256"]
