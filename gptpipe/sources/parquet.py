"""Reading Parquet files as they are published on dataset hubs, one row group at a time.

A Parquet file is read with pyarrow, one row group (in batches of rows) at a time and only
the columns wanted, so memory stays at about one row group's worth of those columns
whatever the file's size. Columns are found by name; a missing column, or one that does not
hold text, is bad input naming the file and the column (and the params key that names it).

Nulls: a row whose needed value is null is skipped and counted (the count lands in
provenance.json as `null_rows`), never turned into text. An optional column (an instruction
record's `input`) that is null reads as an empty string.

Labels may be strings or integers; integers are replaced by their names when the file's
schema says what they are (a Hugging Face `ClassLabel`, as the hub writes it into the
schema's `huggingface` metadata), else written as numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gptpipe.errors import BadInput
from gptpipe.sources.formats import PARQUET_SUFFIXES

BATCH_ROWS = 8192  # rows converted to Python at a time (a row group is read whole first)


@dataclass(frozen=True)
class Column:
    """A column wanted: its name in the file, what it is called in messages (the params key
    that names it), and how it is read: text (strings), a label (strings or integers), or
    optional text (a missing or null value is an empty string)."""

    name: str
    key: str
    kind: str = "text"  # text | label | optional


def _said(exc: BaseException) -> str:
    """pyarrow's message on one line (some span several)."""
    return " ".join(str(exc).split()) or exc.__class__.__name__


def is_parquet(name: str) -> bool:
    return name.lower().endswith(PARQUET_SUFFIXES)


def open_parquet(path: Path, origin: str) -> pq.ParquetFile:
    """The Parquet file at `path`; one that is not Parquet, or cut short, is bad input."""
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head == b"PAR1":
            why = f"truncated or corrupt Parquet file ({_said(exc)})"
        else:
            why = f"not a Parquet file ({_said(exc)})"
        raise BadInput(f"{origin}: {why}") from None


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _is_text(kind.value_type)
    return bool(
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_null(kind)  # a column that is all nulls (skipped and counted)
    )


def _is_label(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _is_label(kind.value_type)
    return _is_text(kind) or pa.types.is_integer(kind)


def _label_names(pf: pq.ParquetFile, column: str) -> list[str] | None:
    """The names of an integer label column, from Hugging Face's `ClassLabel` metadata."""
    meta = pf.schema_arrow.metadata or {}
    raw = meta.get(b"huggingface")
    if not raw:
        return None
    try:
        features = json.loads(raw)["info"]["features"]
        names = features[column]["names"]
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return names
    return None


def _check_columns(pf: pq.ParquetFile, origin: str, columns: Sequence[Column]) -> list[Column]:
    """The columns present (an optional one may be absent); bad input for the rest."""
    schema = pf.schema_arrow
    present = []
    for column in columns:
        index = schema.get_field_index(column.name)
        if index < 0:
            if column.kind == "optional":
                continue
            names = ", ".join(schema.names[:20]) + (", ..." if len(schema.names) > 20 else "")
            raise BadInput(
                f"{origin}: no column {column.name!r} (columns: {names}); name the column "
                f"that holds it with {column.key}"
            )
        kind = schema.field(index).type
        ok = _is_label(kind) if column.kind == "label" else _is_text(kind)
        if not ok:
            want = "strings or integers" if column.kind == "label" else "strings"
            raise BadInput(
                f"{origin}: column {column.name!r} ({column.key}) holds {kind}, not {want}"
            )
        present.append(column)
    return present


@dataclass
class Rows:
    """What reading a file saw: rows in it, rows skipped for a null."""

    rows: int = 0
    null_rows: int = 0


def _values(array: pa.Array, names: list[str] | None) -> list[Any]:
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    values = array.to_pylist()
    if names is not None:
        return [names[v] if isinstance(v, int) and 0 <= v < len(names) else v for v in values]
    return values


def read_rows(
    path: Path, origin: str, columns: Sequence[Column], seen: Rows
) -> Iterator[tuple[str, dict[str, str]]]:
    """(where, {column name: value}) of each row of a Parquet file, row group by row group.

    Rows whose text or label value is null are skipped and counted in `seen.null_rows`;
    labels are strings (integers by their `ClassLabel` name when the file gives one). A row
    group that cannot be read is bad input naming it.
    """
    pf = open_parquet(path, origin)
    present = _check_columns(pf, origin, columns)
    names = {c.name: _label_names(pf, c.name) if c.kind == "label" else None for c in present}
    wanted = list(dict.fromkeys(c.name for c in present))
    for group in range(pf.metadata.num_row_groups):
        where = f"{origin}: row group {group}"
        row = 0
        try:
            batches = pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=wanted)
            for batch in batches:
                data = {name: _values(batch.column(name), names[name]) for name in wanted}
                for i in range(batch.num_rows):
                    record: dict[str, str] = {}
                    for column in present:
                        value = data[column.name][i]
                        if value is None:
                            if column.kind != "optional":
                                break
                            value = ""
                        record[column.name] = str(value)
                    else:
                        yield f"{where}, row {row + i}", record
                        continue
                    seen.null_rows += 1
                row += batch.num_rows
                seen.rows += batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise BadInput(f"{where}: unreadable ({_said(exc)})") from None


def read_texts(path: Path, origin: str, column: Column, seen: Rows) -> Iterator[str]:
    """The strings of one text column, row group by row group, nulls skipped and counted.

    The fast path for a corpus: whole batches go to Python at once, with no per-row records.
    """
    pf = open_parquet(path, origin)
    _check_columns(pf, origin, [column])
    for group in range(pf.metadata.num_row_groups):
        try:
            batches = pf.iter_batches(
                batch_size=BATCH_ROWS, row_groups=[group], columns=[column.name]
            )
            for batch in batches:
                array = batch.column(0)
                seen.rows += len(array)
                if array.null_count:
                    seen.null_rows += array.null_count
                    array = array.drop_null()
                yield from _values(array, None)
        except (pa.ArrowException, OSError) as exc:
            raise BadInput(f"{origin}: row group {group}: unreadable ({_said(exc)})") from None
