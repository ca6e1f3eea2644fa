"""Normalisers, named sets and the offline `stdlib` builder."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from gptpipe import datasets
from gptpipe.datasets import (
    AREA_OF,
    CLASSIFY_CAP_PER_LABEL,
    DOC_SEPARATOR,
    INSTRUCT_KEYS,
    NAMED_SETS,
    StdlibBuild,
    build_stdlib,
    check_source,
    classify_rows,
    counts,
    decode_text,
    instruct_records,
    load_source,
    module_entries,
    parse_alpaca,
    parse_classify,
    parse_corpus,
    parse_csv,
    parse_instructions,
    parse_tsv,
    render,
    stdlib_files,
    stdlib_root,
)
from gptpipe.errors import BadInput
from gptpipe.tokenizer import EOT

# --------------------------------------------------------------------------- decoding & corpus


def test_decode_text_drops_bom_and_normalises_newlines():
    assert decode_text("\ufeffa\r\nb\rc\n".encode(), "f.txt") == "a\nb\nc\n"


def test_non_utf8_is_bad_input_naming_the_file_and_offset():
    with pytest.raises(
        BadInput, match=r"^corpus\.bin: not UTF-8 text \(invalid byte at offset 3\)"
    ):
        decode_text(b"abc\xff\xfe", "corpus.bin")


def test_corpus_documents_are_split_on_end_of_text_and_trimmed():
    text = f"\n\nFirst doc.\n  indented line \n{EOT}\n{EOT}\n\nSecond{EOT}third\n\n"
    assert parse_corpus(text, "c.txt") == ["First doc.\n  indented line ", "Second", "third"]


@pytest.mark.parametrize("text", ["", "\n\n  \n", f"{EOT}\n{EOT}\n"])
def test_empty_corpus_is_bad_input(text):
    with pytest.raises(BadInput, match=r"c\.txt: empty corpus"):
        parse_corpus(text, "c.txt")


def test_rendered_corpus_separates_documents_by_a_line_of_end_of_text():
    text = render("corpus", ["one\ntwo", "three"])
    assert text == f"one\ntwo\n{EOT}\nthree\n"
    assert parse_corpus(text, "c.txt") == ["one\ntwo", "three"]
    assert text.split("\n").count(EOT) == 1 and f"\n{EOT}\n" == DOC_SEPARATOR


def test_one_document_keeps_the_text_whole():
    text = "A.\n\nB.  \n"
    assert datasets.one_document(text, "t.txt") == ["A.\n\nB.  "]


# --------------------------------------------------------------------------- instructions

RECORDS = [
    {"instruction": "Add.", "input": "1 2", "output": "3", "extra": 1},
    {"instruction": "Greet.", "input": "", "output": "Hello"},
]


def test_instructions_from_a_json_list_keep_the_three_keys_only():
    records = parse_instructions(json.dumps(RECORDS), "i.json")
    assert records == [{k: r[k] for k in INSTRUCT_KEYS} for r in RECORDS]


def test_instructions_from_json_lines():
    text = "\n".join(json.dumps(r) for r in RECORDS) + "\n\n"
    assert [r["output"] for r in parse_instructions(text, "i.jsonl")] == ["3", "Hello"]


def test_rendered_instructions_read_back_as_the_same_records():
    records = parse_instructions(json.dumps(RECORDS), "i.json")
    assert json.loads(render("instruct", records)) == records


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"instruction": "x"}, "expected a non-empty JSON list"),
        ([], "expected a non-empty JSON list"),
        (["text"], "record 0: expected an object"),
        ([RECORDS[1], {"instruction": "a", "output": "b"}], "record 1: missing key.s. input"),
        (
            [{"instruction": "a", "input": 3, "output": "b"}],
            "record 0: key.s. input must be strings",
        ),
        ([{"instruction": " ", "input": "", "output": "b"}], "record 0: empty instruction"),
    ],
)
def test_bad_instruction_data_is_bad_input_naming_the_file(value, message):
    with pytest.raises(BadInput, match=rf"^i\.json: {message}"):
        parse_instructions(json.dumps(value), "i.json")


def test_instructions_that_are_not_json_are_bad_input():
    with pytest.raises(BadInput, match=r"i\.json: not valid JSON"):
        parse_instructions("instruction: add\n", "i.json")
    with pytest.raises(BadInput, match=r"i\.jsonl: line 2: not valid JSON Lines"):
        parse_instructions('{"instruction": "a", "input": "", "output": "b"}\n{oops\n', "i.jsonl")
    with pytest.raises(BadInput, match=r"a\.json: not valid JSON"):
        parse_alpaca("\n".join(json.dumps(r) for r in RECORDS), "a.json")


# --------------------------------------------------------------------------- classification


def test_tsv_rows_with_tabs_and_spaces_inside_the_text():
    text = "ham\tsee you  at 5\t pm \n\nspam\tWIN\r\n"
    assert parse_tsv(decode_text(text.encode(), "x"), "s.tsv") == [
        ("ham", "see you  at 5  pm"),
        ("spam", "WIN"),
    ]


def test_tsv_line_without_a_tab_is_bad_input_naming_the_line():
    with pytest.raises(BadInput, match=r"^s\.tsv: line 3: expected label<TAB>text"):
        parse_tsv("a\tx\nb\ty\nno tab here\n", "s.tsv")


def test_tsv_row_with_an_empty_text_is_bad_input_naming_the_line():
    with pytest.raises(BadInput, match=r"^s\.tsv: line 2: expected label and text"):
        parse_tsv("a\tx\nb\t  \n", "s.tsv")


def test_fewer_than_two_labels_is_bad_input():
    with pytest.raises(BadInput, match=r"s\.tsv: .*at least 2 labels, found 1 \(ham\)"):
        parse_tsv("ham\tx\nham\ty\n", "s.tsv")


def test_csv_with_header_quotes_and_commas():
    text = 'label,text\npos,"great, really\ngreat"\nneg,bad,awful\n'
    assert parse_csv(text, "c.csv") == [("pos", "great, really great"), ("neg", "bad,awful")]


def test_csv_row_with_one_field_is_bad_input_naming_the_line():
    with pytest.raises(BadInput, match=r"^c\.csv: line 3: expected label,text"):
        parse_csv("a,x\nb,y\nlonely\n", "c.csv")


def test_classify_format_is_guessed_from_the_first_line():
    assert parse_classify("a\tx, y\nb\tz\n", "f") == [("a", "x, y"), ("b", "z")]
    assert parse_classify("a,x q\nb,z\tw\n", "f") == [("a", "x q"), ("b", "z w")]
    with pytest.raises(BadInput, match="empty classification file"):
        parse_classify("\n \n", "f")


def test_rendered_classify_is_one_label_tab_text_line_per_row():
    rows = [("a", "x y"), ("b", "z")]
    assert render("classify", rows) == "a\tx y\nb\tz\n"
    assert counts("classify", rows) == {"lines": 2, "labels": {"a": 1, "b": 1}}


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
            normalise=parse_tsv,
            archive_name="mini.tar.gz",
        )
    }
    work = tmp_path / "work"
    loaded = load_source(
        "classify", "mini", "k", work, mirror=tmp_path, timeout=1, retries=1, named=table
    )
    assert loaded.items == [("ham", "ok then"), ("spam", "free prize")]
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
            normalise=parse_tsv,
        )
    }
    (tmp_path / "mini.tsv").write_bytes(data)
    loaded = load_source(
        "classify",
        "mini",
        "data.classify",
        tmp_path,
        mirror=tmp_path,
        timeout=1,
        retries=1,
        named=table,
    )
    assert loaded.items == [("ham", "ok then"), ("spam", "free prize")]
    assert loaded.provenance["type"] == "named" and loaded.provenance["license"] == "CC0"
    assert loaded.provenance["upstream"]["sha256"] == table["mini"].sha256
    (tmp_path / "mini.tsv").write_bytes(data + b"ham\tmore\n")
    with pytest.raises(BadInput, match=r"mini\.tsv: sha256 mismatch"):
        load_source(
            "classify",
            "mini",
            "data.classify",
            tmp_path,
            mirror=tmp_path,
            timeout=1,
            retries=1,
            named=table,
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
    text = render("corpus", stdlib_build.corpus)
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
        first = hashlib.sha256(render(kind, getattr(stdlib_build, kind)).encode()).hexdigest()
        second = hashlib.sha256(render(kind, getattr(again, kind)).encode()).hexdigest()
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
