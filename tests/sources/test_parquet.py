"""Parquet files as the hubs publish them, read with pyarrow one row group at a time: text
columns of every string type, nulls skipped and counted, columns found by name (or mapped),
integer labels named by Hugging Face's ClassLabel metadata, and bad files named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.faults import raises_bad_input

from gptpipe.sources import parquet
from gptpipe.sources.formats import Fields
from gptpipe.sources.readers import normalise
from gptpipe.tokenizer.special import EOT


def write(path: Path, columns: dict[str, Any], row_group_size: int = 3, **meta: str) -> Path:
    table = pa.table(columns)
    if meta:
        table = table.replace_schema_metadata({k: v.encode() for k, v in meta.items()})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_a_corpus_column_is_read_row_group_by_row_group_with_nulls_counted(tmp_path):
    texts = [f"document {i}" if i % 4 else None for i in range(10)]
    source = write(tmp_path / "c.parquet", {"id": list(range(10)), "text": texts})
    assert pq.ParquetFile(source).metadata.num_row_groups == 4
    out = tmp_path / "corpus.txt"
    counts = normalise("corpus", source, "c.parquet", out)
    kept = [t for t in texts if t is not None]
    assert out.read_text() == f"\n{EOT}\n".join(kept) + "\n"
    assert counts == {
        "documents": 7,
        "characters": sum(map(len, kept)),
        "rows": 10,
        "null_rows": 3,
    }


@pytest.mark.parametrize(
    "kind",
    [pa.string(), pa.large_string(), pa.string_view(), pa.dictionary(pa.int32(), pa.string())],
    ids=str,
)
def test_every_string_type_is_text(tmp_path, kind):
    array = pa.array(["one\r\ntwo", "three"], type=pa.string()).cast(kind)
    source = write(tmp_path / "c.parquet", {"content": array})
    out = tmp_path / "corpus.txt"
    fields = Fields(text="content")
    assert normalise("corpus", source, "c.parquet", out, fields)["documents"] == 2
    assert out.read_text() == f"one\ntwo\n{EOT}\nthree\n"


def test_a_missing_column_names_the_file_the_column_and_the_key(tmp_path):
    source = write(tmp_path / "c.parquet", {"content": ["a"]})
    message = raises_bad_input(
        lambda: normalise("corpus", source, "c.parquet", tmp_path / "out.txt"),
        "c.parquet",
        "no column 'text'",
        "columns: content",
        "data.text_column",
    )
    assert message.startswith("c.parquet: ")
    assert not (tmp_path / "out.txt").exists()


def test_a_column_of_numbers_is_refused_naming_its_type(tmp_path):
    source = write(tmp_path / "c.parquet", {"text": [1, 2, 3]})
    raises_bad_input(
        lambda: normalise("corpus", source, "c.parquet", tmp_path / "out.txt"),
        "c.parquet",
        "column 'text' (data.text_column) holds int64, not strings",
    )


@pytest.mark.parametrize(
    ("cut", "fragment"),
    [
        (lambda b: b[: len(b) // 2], "truncated or corrupt Parquet"),
        (lambda b: b"", "not a Parquet file"),
        (lambda b: b"id,text\n1,hello\n", "not a Parquet file"),
    ],
    ids=["truncated", "empty", "csv-named-parquet"],
)
def test_a_broken_or_foreign_file_is_bad_input(tmp_path, cut, fragment):
    good = write(tmp_path / "good.parquet", {"text": ["hello"] * 50})
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(cut(good.read_bytes()))
    raises_bad_input(
        lambda: normalise("corpus", bad, "bad.parquet", tmp_path / "out.txt"),
        "bad.parquet",
        fragment,
    )
    assert not (tmp_path / "out.txt").exists()


def test_a_corrupt_row_group_is_named(tmp_path):
    rows = [f"row {i} " * 40 for i in range(40)]
    source = write(tmp_path / "c.parquet", {"text": rows}, row_group_size=10)
    meta = pq.ParquetFile(source).metadata
    column = meta.row_group(2).column(0)
    start = column.data_page_offset
    data = bytearray(source.read_bytes())
    data[start + 20 : start + 400] = b"\xff" * 380  # the third row group's page, mangled
    source.write_bytes(bytes(data))
    raises_bad_input(
        lambda: normalise("corpus", source, "c.parquet", tmp_path / "out.txt"),
        "c.parquet: row group 2: unreadable",
    )
    assert not (tmp_path / "out.txt").exists()


def test_instruction_columns_map_by_name_and_input_may_be_absent(tmp_path):
    source = write(
        tmp_path / "dolly.parquet",
        {
            "prompt": ["Say hi.", None, "Add 2 and 2."],
            "context": [None, "x", "numbers"],
            "response": ["Hi!", "y", "4"],
        },
    )
    fields = Fields(instruction="prompt", input="context", output="response")
    out = tmp_path / "instruct.json"
    counts = normalise("instruct", source, "dolly.parquet", out, fields)
    assert json.loads(out.read_text()) == [
        {"instruction": "Say hi.", "input": "", "output": "Hi!"},
        {"instruction": "Add 2 and 2.", "input": "numbers", "output": "4"},
    ]
    assert counts == {"records": 2, "rows": 3, "null_rows": 1}
    # No input column at all (data.columns.input: ""): every input is empty.
    bare = write(tmp_path / "bare.parquet", {"instruction": ["Go."], "output": ["Gone."]})
    normalise("instruct", bare, "bare.parquet", out, Fields(input=""))
    assert json.loads(out.read_text()) == [{"instruction": "Go.", "input": "", "output": "Gone."}]
    # The default names, when the file lacks one, name the key that maps it.
    raises_bad_input(
        lambda: normalise("instruct", source, "dolly.parquet", out),
        "dolly.parquet",
        "no column 'instruction'",
        "data.columns.instruction",
    )


def test_integer_labels_take_their_classlabel_names(tmp_path):
    """ucirvine/sms_spam on the hub: `sms` text, `label` int64 with names in the schema."""
    features = {"sms": {"dtype": "string", "_type": "Value"}}
    features["label"] = {"names": ["ham", "spam"], "_type": "ClassLabel"}
    meta = json.dumps({"info": {"features": features}})
    source = write(
        tmp_path / "sms.parquet",
        {"sms": ["Hi there\tfriend", "WIN NOW", "ok", None], "label": [0, 1, 0, 1]},
        huggingface=meta,
    )
    out = tmp_path / "classify.tsv"
    counts = normalise("classify", source, "sms.parquet", out, Fields(label_text="sms"))
    assert out.read_text() == "ham\tHi there friend\nspam\tWIN NOW\nham\tok\n"
    assert counts["labels"] == {"ham": 2, "spam": 1} and counts["null_rows"] == 1
    # Without the metadata the numbers are the labels.
    plain = write(tmp_path / "plain.parquet", {"text": ["a", "b"], "label": [0, 1]})
    normalise("classify", plain, "plain.parquet", out)
    assert out.read_text() == "0\ta\n1\tb\n"


def test_a_label_column_of_floats_is_refused(tmp_path):
    source = write(tmp_path / "c.parquet", {"text": ["a", "b"], "label": [0.5, 1.5]})
    raises_bad_input(
        lambda: normalise("classify", source, "c.parquet", tmp_path / "o.tsv"),
        "c.parquet",
        "column 'label' (data.columns.label) holds double, not strings or integers",
    )


def test_rows_are_read_in_batches_not_whole_files(tmp_path, monkeypatch):
    """Memory stays at one batch of one row group: the reader never asks for more rows."""
    monkeypatch.setattr(parquet, "BATCH_ROWS", 4)
    source = write(tmp_path / "c.parquet", {"text": [str(i) for i in range(30)]}, 10)
    seen = parquet.Rows()
    sizes = []
    original = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        for batch in original(self, *args, **kwargs):
            sizes.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    column = parquet.Column("text", "data.text_column")
    assert list(parquet.read_texts(source, "c", column, seen)) == [str(i) for i in range(30)]
    assert max(sizes) == 4 and seen.rows == 30
