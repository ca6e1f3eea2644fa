"""File formats of the three kinds: decoding, the streamed corpus writer, instructions and
classification rows."""

from __future__ import annotations

import io
import json
import random
import tracemalloc
from pathlib import Path

import pytest

from gptpipe.errors import BadInput
from gptpipe.sources.formats import (
    DOC_SEPARATOR,
    INSTRUCT_KEYS,
    NORMALISERS,
    CorpusWriter,
    corpus_format,
    counts,
    decode_text,
    parse_alpaca,
    parse_classify,
    parse_csv,
    parse_instructions,
    parse_labelled_json,
    parse_tsv,
    render_classify,
    render_corpus,
    render_instructions,
    write_corpus,
    write_items,
)
from gptpipe.tokenizer.special import EOT

# --------------------------------------------------------------------------- decoding


def test_decode_text_drops_bom_and_normalises_newlines():
    assert decode_text("\ufeffa\r\nb\rc\n".encode(), "f.txt") == "a\nb\nc\n"


def test_non_utf8_is_bad_input_naming_the_file_and_offset():
    with pytest.raises(
        BadInput, match=r"^corpus\.bin: not UTF-8 text \(invalid byte at offset 3\)"
    ):
        decode_text(b"abc\xff\xfe", "corpus.bin")


# --------------------------------------------------------------------------- corpus


def reference_corpus(text: str, one_document: bool = False) -> str:
    """What the streamed writer must produce, computed on the whole text at once."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    parts = [text.replace(EOT, "")] if one_document else text.split(EOT)
    docs = [part.strip("\n") for part in parts]
    docs = [doc for doc in docs if doc.strip()]
    return render_corpus(docs) if docs else ""


def corpus_of(tmp_path: Path, data: bytes | str, name: str = "c.txt", **options) -> str:
    source = tmp_path / name
    source.write_bytes(data.encode() if isinstance(data, str) else data)
    write_corpus(source, name, tmp_path / "out.txt", **options)
    return (tmp_path / "out.txt").read_text(encoding="utf-8")


def test_corpus_documents_are_split_on_end_of_text_and_trimmed(tmp_path):
    text = f"\n\nFirst doc.\n  indented line \n{EOT}\n{EOT}\n\nSecond{EOT}third\n\n"
    out = corpus_of(tmp_path, text)
    assert out == f"First doc.\n  indented line {DOC_SEPARATOR}Second{DOC_SEPARATOR}third\n"
    counts_ = write_corpus(tmp_path / "c.txt", "c.txt", tmp_path / "again.txt")
    assert counts_ == {"documents": 3, "characters": len("First doc.\n  indented line ") + 11}


@pytest.mark.parametrize("text", ["", "\n\n  \n", f"{EOT}\n{EOT}\n"])
def test_empty_corpus_is_bad_input_and_writes_nothing(tmp_path, text):
    with pytest.raises(BadInput, match=r"c\.txt: empty corpus"):
        corpus_of(tmp_path, text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


def test_one_document_keeps_the_text_whole(tmp_path):
    assert corpus_of(tmp_path, f"A.\n\nB.  {EOT}C\n", one_document=True) == "A.\n\nB.  C\n"


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("one_document", [False, True])
def test_streamed_corpus_equals_the_whole_text_reading_at_any_block_size(
    tmp_path, seed, one_document
):
    """Blocks may cut a UTF-8 sequence, a \\r\\n or an <|endoftext|> anywhere."""
    rng = random.Random(seed)
    atoms = ["a", "word ", "é", "日本", "🙂", " ", "\t", "\n", "\r\n", "\r", EOT, "<|", "|>", "<"]
    text = "".join(rng.choice(atoms) for _ in range(rng.randrange(1, 400)))
    text = ("\ufeff" if seed % 2 else "") + text + "tail"
    expected = reference_corpus(text, one_document)
    for block in (1, 2, 3, 5, 16, 1 << 20):
        out = corpus_of(tmp_path, text, one_document=one_document, block_bytes=block)
        assert out == expected, block


def test_invalid_utf8_names_the_offset_across_blocks(tmp_path):
    data = "ab€cd".encode() + b"\xff" + b"tail"  # the bad byte at offset 7
    for block in (1, 2, 4, 1 << 20):
        with pytest.raises(BadInput, match=r"^c\.txt: not UTF-8 text .*offset 7\)"):
            corpus_of(tmp_path, data, block_bytes=block)
    with pytest.raises(BadInput, match=r"offset 2\)"):
        corpus_of(tmp_path, b"ab\xe2\x82")  # a sequence cut short by the end of the file


def test_a_large_corpus_is_written_in_constant_memory(tmp_path):
    """24 MB of one document: Python allocations stay at a few blocks, not the file size."""
    source = tmp_path / "big.txt"
    line = ("All the world's a stage, and all the men and women merely players. " * 8) + "\r\n"
    with source.open("w", encoding="utf-8", newline="") as fh:
        for _ in range(24_000_000 // len(line)):
            fh.write(line)
    tracemalloc.start()
    try:
        counts_ = write_corpus(source, "big.txt", tmp_path / "out.txt", block_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert counts_["documents"] == 1
    assert (tmp_path / "out.txt").stat().st_size == source.stat().st_size - 24_000_000 // len(
        line
    )  # each \r\n became \n
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_corpus_format_follows_the_file_name():
    assert corpus_format("a/b.JSONL") == "jsonl" and corpus_format("x.ndjson") == "jsonl"
    assert corpus_format("docs.json") == "json"
    assert corpus_format("input.txt") == "text" and corpus_format("README") == "text"


def test_json_lines_corpus_takes_strings_or_text_fields(tmp_path):
    lines = [
        json.dumps({"text": "First\r\ndoc.\n", "meta": 1}),
        "",
        json.dumps("Second doc."),
        json.dumps({"text": "  \n"}),  # only whitespace: skipped
        json.dumps({"text": f"Third{EOT}Fourth"}),
    ]
    out = corpus_of(tmp_path, "\ufeff" + "\n".join(lines) + "\n", name="c.jsonl")
    assert out == render_corpus(["First\ndoc.", "Second doc.", "Third", "Fourth"])


def test_json_corpus_is_a_list_of_documents(tmp_path):
    out = corpus_of(tmp_path, json.dumps(["One.", {"text": "Two."}]), name="c.json")
    assert out == render_corpus(["One.", "Two."])


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("c.jsonl", '{"text": "a"}\n{oops\n', r"c\.jsonl: line 2: not valid JSON Lines"),
        ("c.jsonl", '{"text": "a"}\n{"body": "b"}\n', r'c\.jsonl: line 2: expected .*"text"'),
        ("c.jsonl", b'{"text": "a"}\n"\xff"\n', r"c\.jsonl: line 2: not UTF-8 .*offset 15\)"),
        ("c.json", '{"text": "a"}', r"c\.json: expected a JSON list of documents, found dict"),
        ("c.json", "[1]", r'c\.json: record 0: expected a string or an object with a string "t'),
        ("c.json", "[oops", r"c\.json: not valid JSON"),
    ],
)
def test_bad_json_corpus_is_bad_input_naming_the_line_or_record(tmp_path, name, data, message):
    with pytest.raises(BadInput, match=rf"^{message}"):
        corpus_of(tmp_path, data, name=name)
    assert not (tmp_path / "out.txt").exists()


def test_rendered_corpus_separates_documents_by_a_line_of_end_of_text():
    text = render_corpus(["one\ntwo", "three"])
    assert text == f"one\ntwo\n{EOT}\nthree\n"
    assert text.split("\n").count(EOT) == 1 and f"\n{EOT}\n" == DOC_SEPARATOR


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
    assert json.loads(render_instructions(records)) == records


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


def test_labelled_json_and_json_lines():
    rows = [{"label": 1, "text": "good\tfilm"}, {"label": 0, "text": "bad", "id": 7}]
    expected = [("1", "good film"), ("0", "bad")]
    assert parse_labelled_json(json.dumps(rows), "l.json") == expected
    assert parse_labelled_json("\n".join(map(json.dumps, rows)), "l.jsonl") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"label": "a", "text": "x"}, "expected a JSON list of objects"),
        ([{"label": "a", "text": "x"}, {"text": "y"}], 'record 1: expected an object with a "l'),
        ([{"label": True, "text": "x"}], 'record 0: expected an object with a "label"'),
        ([{"label": "a", "text": 3}], 'record 0: expected an object with a string "text"'),
    ],
)
def test_bad_labelled_json_is_bad_input_naming_the_record(value, message):
    with pytest.raises(BadInput, match=rf"^l\.json: {message}"):
        parse_labelled_json(json.dumps(value), "l.json")


def test_classify_format_is_guessed_from_the_first_line():
    assert parse_classify("a\tx, y\nb\tz\n", "f") == [("a", "x, y"), ("b", "z")]
    assert parse_classify("a,x q\nb,z\tw\n", "f") == [("a", "x q"), ("b", "z w")]
    rows = '[{"label": "a", "text": "x"}, {"label": "b", "text": "y"}]'
    assert parse_classify(rows, "f") == [("a", "x"), ("b", "y")]
    with pytest.raises(BadInput, match="empty classification file"):
        parse_classify("\n \n", "f")


def test_rendered_classify_is_one_label_tab_text_line_per_row(tmp_path):
    rows = [("a", "x y"), ("b", "z")]
    assert render_classify(rows) == "a\tx y\nb\tz\n"
    assert counts("classify", rows) == {"lines": 2, "labels": {"a": 1, "b": 1}}
    assert write_items("classify", rows, tmp_path / "c.tsv") == counts("classify", rows)
    assert (tmp_path / "c.tsv").read_text() == "a\tx y\nb\tz\n"


def test_each_kind_has_a_file_normaliser(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("label,text\npos,nice\nneg,bad\n")
    assert NORMALISERS["classify"](source, "in.csv", tmp_path / "out.tsv") == {
        "lines": 2,
        "labels": {"neg": 1, "pos": 1},
    }
    assert (tmp_path / "out.tsv").read_text() == "pos\tnice\nneg\tbad\n"
    with pytest.raises(BadInput, match=r"^in\.csv: line 2"):
        source.write_text("label,text\nlonely\n")
        NORMALISERS["classify"](source, "in.csv", tmp_path / "bad.tsv")
    assert not (tmp_path / "bad.tsv").exists()


def test_add_document_writes_what_feed_and_end_document_write():
    """The per-document fast path (Parquet and JSON documents) against the general one, on
    documents made of the characters that matter: line breaks, whitespace, separators."""
    rng = random.Random(0)
    pieces = ["a", "é", " ", "\n", "\r", "\r\n", "\t", "\x1c", EOT, "<|endof", "\u2028"]
    docs = ["".join(rng.choices(pieces, k=rng.randint(0, 8))) for _ in range(3000)]
    fast, slow = io.StringIO(), io.StringIO()
    a, b = CorpusWriter(fast), CorpusWriter(slow)
    for doc in docs:
        a.add_document(doc)
        b.feed(doc.replace("\r\n", "\n").replace("\r", "\n"))
        b.end_document()
    assert a.close() == b.close()
    assert fast.getvalue() == slow.getvalue()
