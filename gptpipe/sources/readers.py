"""Reading a user's file of any format the pipeline takes, Parquet included.

`gptpipe.sources.formats` reads text and JSON (and is all the fine-tuning stages need);
this module adds Parquet (`gptpipe.sources.parquet`, pyarrow) and picks the reader by the
file's name: the download stage reads every source through here.
"""

from __future__ import annotations

from pathlib import Path

from gptpipe.errors import BadInput
from gptpipe.sources import parquet
from gptpipe.sources.formats import (
    DEFAULT_FIELDS,
    CorpusWriter,
    Counts,
    Fields,
    Items,
    Kind,
    Record,
    check_labels,
    checked_record,
    corpus_format,
    decode_text,
    feed_corpus,
    instruct_names,
    labelled_row,
    parse_classify,
    parse_instructions,
    write_documents,
    write_items,
)


def feed_file(
    writer: CorpusWriter, source: Path, origin: str, fields: Fields = DEFAULT_FIELDS
) -> Counts:
    """Add a corpus file's documents to `writer` (format by its name); return what it held:
    `documents` written, and for Parquet its `rows` and the `null_rows` skipped."""
    if corpus_format(source.name) != "parquet":
        return feed_corpus(writer, source, origin, fields=fields)
    before = writer.documents
    seen = parquet.Rows()
    column = parquet.Column(fields.text, fields.key("text"))
    for text in parquet.read_texts(source, origin, column, seen):
        writer.add_document(text)
    return {"documents": writer.documents - before, "rows": seen.rows, "null_rows": seen.null_rows}


# --------------------------------------------------------------------------- Parquet records


def parquet_instructions(
    source: Path, origin: str, fields: Fields = DEFAULT_FIELDS
) -> tuple[list[Record], parquet.Rows]:
    """Alpaca records from a Parquet file's instruction, input and output columns (input
    optional); rows with a null instruction or output are skipped and counted."""
    names = instruct_names(fields)
    columns = [
        parquet.Column(theirs, fields.key(ours), "optional" if ours == "input" else "text")
        for ours, theirs in names.items()
    ]
    seen = parquet.Rows()
    records = [
        checked_record({ours: row.get(theirs, "") for ours, theirs in names.items()}, where)
        for where, row in parquet.read_rows(source, origin, columns, seen)
    ]
    if not records:
        raise BadInput(f"{origin}: no instruction records ({seen.null_rows} null rows skipped)")
    return records, seen


def parquet_labelled(
    source: Path, origin: str, fields: Fields = DEFAULT_FIELDS
) -> tuple[list[tuple[str, str]], parquet.Rows]:
    """(label, text) rows from a Parquet file's label and text columns; rows with a null
    in either are skipped and counted."""
    columns = [
        parquet.Column(fields.label, fields.key("label"), "label"),
        parquet.Column(fields.label_text, fields.key("label_text")),
    ]
    seen = parquet.Rows()
    rows = [
        labelled_row(row[fields.label], row[fields.label_text], where)
        for where, row in parquet.read_rows(source, origin, columns, seen)
    ]
    return check_labels(rows, origin), seen


def normalise(
    kind: Kind, source: Path, origin: str, dest: Path, fields: Fields = DEFAULT_FIELDS
) -> Counts:
    """Read a user's file of a kind (format by its name and bytes) and write the kind's
    normalised file, with fields found where `fields` says; return the counts."""
    if kind == "corpus":
        return write_documents(
            dest, origin, lambda writer: feed_file(writer, source, origin, fields)
        )
    if corpus_format(source.name) == "parquet":
        items: Items
        if kind == "instruct":
            items, seen = parquet_instructions(source, origin, fields)
        else:
            items, seen = parquet_labelled(source, origin, fields)
        return write_items(kind, items, dest) | {"rows": seen.rows, "null_rows": seen.null_rows}
    text = decode_text(source.read_bytes(), origin)
    if kind == "instruct":
        return write_items(kind, parse_instructions(text, origin, fields), dest)
    return write_items(kind, parse_classify(text, origin, fields), dest)
