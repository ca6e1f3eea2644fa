"""The file formats of the pipeline's three kinds of data: what users bring, what we write.

What the `download` stage writes:
- corpus (`corpus.txt`): documents of plain text, each followed by nothing but a line holding
  only `<|endoftext|>` before the next, the file ending in a newline;
- instruct (`instruct.json`): a JSON list of Alpaca records {"instruction", "input", "output"};
- classify (`classify.tsv`): one `label<TAB>text` line per example.

What it reads (always strict UTF-8, a leading BOM dropped, line breaks made `\\n`):
- corpus, picked by the file's name: Parquet (`.parquet`, `.pq`: one document per row of
  the text column), JSON Lines (`.jsonl`, `.ndjson`: one document per line, a string or an
  object with a string "text"), JSON (`.json`: a list of the same), or plain text (anything
  else: `<|endoftext|>` separates documents). Streamed in blocks (Parquet: row groups), so
  memory stays at a few MB whatever the corpus's size;
- instruct: a JSON list or JSON Lines of Alpaca records, or Parquet with those columns;
- classify: TSV (`label<TAB>text`), CSV (`label,text`, an optional header), JSON / JSON
  Lines objects with "label" and "text", or Parquet with those columns.

Field names ("text", "instruction", "input", "output", "label") are those of `Fields`, which
maps them to the names a data set uses. Nulls: a JSON `null` document, or a null where a
record needs text, skips the record and is counted (`null_rows` in the counts); a null
`input` is an empty one.

Every reader names the file (and line or record) in its bad-input message, and every writer
writes atomically: a failed read leaves no output behind.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, TextIO

from gptpipe.errors import BadInput
from gptpipe.fsutil import atomic_file
from gptpipe.tokenizer.special import EOT

Kind = Literal["corpus", "instruct", "classify"]
CorpusFormat = Literal["text", "jsonl", "json", "parquet"]
DOC_SEPARATOR = f"\n{EOT}\n"
INSTRUCT_KEYS = ("instruction", "input", "output")
READ_BYTES = 1 << 20
PARQUET_SUFFIXES = (".parquet", ".pq")  # read by gptpipe.sources.readers, with pyarrow

Record = dict[str, str]
Items = list[Any]  # list[str] | list[Record] | list[tuple[str, str]], by kind
Counts = dict[str, Any]
# Reads a source file (its location given for messages) and writes the normalised file.
Normaliser = Callable[[Path, str, Path], Counts]


@dataclass(frozen=True)
class Fields:
    """Where each field is found in a data set's records (Parquet columns, JSON keys), and
    the params key that says so (named in messages). `input` may be "" (no such field:
    every input is empty)."""

    text: str = "text"  # a corpus document
    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    label: str = "label"
    label_text: str = "text"  # the text of a classification example
    # (field, params key) where it is not data.columns.FIELD
    keys: tuple[tuple[str, str], ...] = (
        ("text", "data.text_column"),
        ("label_text", "data.columns.text"),
    )

    def key(self, name: str) -> str:
        """The params key that names field `name`."""
        return dict(self.keys).get(name, f"data.columns.{name}")


DEFAULT_FIELDS = Fields()


# --------------------------------------------------------------------------- decoding


def decode_text(data: bytes, origin: str) -> str:
    """Strict UTF-8 (a leading BOM dropped), newlines normalised to \\n."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{origin}: not UTF-8 text (invalid byte at offset {exc.start})") from None
    return newlines(text.removeprefix("\ufeff"))


def newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _held_back(text: str) -> int:
    """How many characters at the end of a block may join the next block's start to mean
    something else: a `\\r` (of `\\r\\n`) or the beginning of an `<|endoftext|>`."""
    if text.endswith("\r"):
        return 1
    for length in range(min(len(EOT) - 1, len(text)), 0, -1):
        if text.endswith(EOT[:length]):
            return length
    return 0


def decoded_blocks(fh: BinaryIO, origin: str, block_bytes: int = READ_BYTES) -> Iterator[str]:
    """A binary file's text in blocks, decoded as `decode_text` decodes the whole.

    No block ends inside a UTF-8 sequence, a `\\r\\n` or an `<|endoftext|>`, so the blocks can
    be normalised and split one by one. Invalid UTF-8 is bad input naming the byte offset.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0  # bytes given to the decoder so far
    held = ""
    at_start = True
    while True:
        block = fh.read(block_bytes)
        final = not block
        buffered = len(decoder.getstate()[0])
        try:
            text = decoder.decode(block, final=final)
        except UnicodeDecodeError as exc:
            where = offset - buffered + exc.start
            raise BadInput(f"{origin}: not UTF-8 text (invalid byte at offset {where})") from None
        offset += len(block)
        if at_start and text:
            text = text.removeprefix("\ufeff")
            at_start = False
        text = held + text
        keep = 0 if final else _held_back(text)
        held = text[len(text) - keep :]
        text = text[: len(text) - keep]
        if text:
            yield newlines(text)
        if final:
            return


# --------------------------------------------------------------------------- corpus


def corpus_format(name: str) -> CorpusFormat:
    """How a corpus file is read, by its name: Parquet, JSON Lines, JSON, else plain text."""
    lower = name.lower()
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if lower.endswith(".json"):
        return "json"
    return "text"


class CorpusWriter:
    """Writes `corpus.txt` from documents given in pieces, in constant memory.

    A document is cleaned as it streams: `<|endoftext|>` never appears inside one, line breaks
    at its start and end are dropped, and one holding only whitespace is skipped. Documents
    are joined by DOC_SEPARATOR and the file ends in a newline.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.documents = 0
        self.characters = 0
        self._lead = ""  # the document's text so far while it is all whitespace
        self._started = False  # the document has non-whitespace text (and is being written)
        self._newlines = 0  # line breaks at the end of what was fed, written only if more comes

    def feed(self, text: str, *, split: bool = True) -> None:
        """Add text (newlines already normalised) to the current document; with `split`, an
        `<|endoftext|>` in it ends the document, else it is dropped."""
        for i, part in enumerate(text.split(EOT)):
            if i and split:
                self.end_document()
            self._feed(part)

    def _feed(self, text: str) -> None:
        if not text:
            return
        if not self._started:
            text = (self._lead + text).lstrip("\n")
            if not text.strip():
                self._lead = text
                return
            self._lead, self._started = "", True
            if self.documents:
                self.out.write(DOC_SEPARATOR)
        elif self._newlines:
            text = "\n" * self._newlines + text
        body = text.rstrip("\n")
        self._newlines = len(text) - len(body)
        self.out.write(body)
        self.characters += len(body)

    def add_document(self, text: str) -> None:
        """Add one whole document (line breaks not yet normalised): the same as `feed` and
        `end_document`, with less work per document for the common case (no `\\r`, no
        `<|endoftext|>`), since a corpus of many short documents spends its time here."""
        if self._started or self._lead or "\r" in text or EOT in text:
            self.feed(newlines(text))
            self.end_document()
            return
        body = text.strip("\n")
        if not body or body.isspace():
            return
        if self.documents:
            self.out.write(DOC_SEPARATOR)
        self.out.write(body)
        self.characters += len(body)
        self.documents += 1

    def end_document(self) -> None:
        """End the current document (one with no text is dropped)."""
        if self._started:
            self.documents += 1
        self._lead, self._started, self._newlines = "", False, 0

    def close(self) -> Counts:
        """End the last document and the file; return the counts."""
        self.end_document()
        if self.documents:
            self.out.write("\n")
        return {"documents": self.documents, "characters": self.characters}


def _json_problem(exc: ValueError | RecursionError) -> str:
    """Why `json.loads` failed, in words: malformed text, nesting deeper than Python's parser
    recurses (a RecursionError, which would otherwise name no file), or an integer of more
    digits than Python converts (a plain ValueError)."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        return str(exc)
    return "a number with too many digits"


def _loads(text: str, where: str, what: str = "JSON") -> Any:
    """`json.loads(text)`; what it cannot read is bad input naming `where` (file, line)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise BadInput(f"{where}: not valid {what} ({_json_problem(exc)})") from None


def _document_text(value: Any, where: str, fields: Fields = DEFAULT_FIELDS) -> str | None:
    """A JSON document's text; None for a null (skipped and counted by the caller)."""
    if isinstance(value, str):
        return value
    if value is None:
        return None
    name = fields.text
    if isinstance(value, dict):
        text = value.get(name)
        if isinstance(text, str) or (text is None and name in value):
            return text
    raise BadInput(
        f'{where}: expected a string or an object with a string "{name}" field '
        f"({fields.key('text')})"
    )


def json_lines(fh: BinaryIO, origin: str) -> Iterator[tuple[str, Any]]:
    """(where, value) of each non-blank line of a JSON Lines file, read line by line."""
    offset = 0
    for number, line in enumerate(fh, start=1):
        start, offset = offset, offset + len(line)
        if not line.strip():
            continue
        where = f"{origin}: line {number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(
                f"{where}: not UTF-8 text (invalid byte at offset {start + exc.start})"
            ) from None
        yield (
            where,
            _loads(text.removeprefix("\ufeff") if number == 1 else text, where, "JSON Lines"),
        )


_JSON_KINDS = {"{": "dict", '"': "str", "t": "bool", "f": "bool", "n": "NoneType"}


def json_array_items(
    fh: BinaryIO, origin: str, what: str, block_bytes: int = READ_BYTES
) -> Iterator[tuple[str, Any]]:
    """(where, value) of each item of a JSON file holding one list, read incrementally: memory
    stays at a few blocks plus the largest item, whatever the file size."""
    decoder = json.JSONDecoder()
    blocks = decoded_blocks(fh, origin, block_bytes)
    buffer, pos, consumed, eof = "", 0, 0, False

    def more() -> bool:
        """Append the next block (dropping what was consumed); False at the end of the file."""
        nonlocal buffer, pos, consumed, eof
        block = next(blocks, None)
        if block is None:
            eof = True
            return False
        consumed += pos
        buffer, pos = buffer[pos:] + block, 0
        return True

    def skip_space() -> str:
        """The next non-blank character ('' at the end of the file), not consumed."""
        nonlocal pos
        while True:
            while pos < len(buffer) and buffer[pos] in " \t\n\r":
                pos += 1
            if pos < len(buffer) or not more():
                return buffer[pos] if pos < len(buffer) else ""

    def fail(message: str) -> BadInput:
        return BadInput(f"{origin}: not valid JSON ({message} at character {consumed + pos})")

    first = skip_space()
    if first != "[":
        if not first:
            raise fail("no value")
        kind = _JSON_KINDS.get(first, "float" if first in "-0123456789." else "")
        if not kind:
            raise fail(f"unexpected {first!r}")
        raise BadInput(f"{origin}: expected a JSON list of {what}, found {kind}")
    pos += 1
    index = 0
    while True:
        char = skip_space()
        if char == "]" and index == 0:
            pos += 1
            break
        while True:  # decode one item, reading on until it is whole and followed by more
            try:
                value, end = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError as exc:
                # Read on until the unread text doubles (an item larger than a block is then
                # decoded O(log n) times, not once per block).
                if eof:
                    raise fail(exc.msg) from None
                want = max(2 * (len(buffer) - pos), 1)
                while len(buffer) - pos < want and more():
                    pass
                continue
            except (ValueError, RecursionError) as exc:
                raise fail(_json_problem(exc)) from None
            # A number at the end of the buffer may go on in the next block.
            if end < len(buffer) or eof or not more():
                break
        yield f"{origin}: record {index}", value
        index += 1
        pos = end
        char = skip_space()
        if char == ",":
            pos += 1
            continue
        if char == "]":
            pos += 1
            break
        raise fail("expected ',' or ']'" if char else "the list is not closed")
    if skip_space():
        raise fail("extra data after the list")


def feed_corpus(
    writer: CorpusWriter,
    source: Path,
    origin: str,
    *,
    fields: Fields = DEFAULT_FIELDS,
    one_document: bool = False,
    block_bytes: int = READ_BYTES,
) -> Counts:
    """Add a text or JSON (Lines) corpus file's documents (format by its name) to `writer`;
    the file's last document ends with it. Returns what the file held: `documents` written,
    and `null_rows` when JSON had any. (Parquet: `gptpipe.sources.readers.feed_file`.)"""
    fmt = corpus_format(source.name)
    if fmt == "parquet":
        raise ValueError(f"{origin}: Parquet is read by gptpipe.sources.readers")
    before = writer.documents
    found: Counts = {}
    with open(source, "rb") as fh:
        if fmt == "text":
            for text in decoded_blocks(fh, origin, block_bytes):
                writer.feed(text, split=not one_document)
        else:
            if fmt == "jsonl":
                values: Iterator[tuple[str, Any]] = json_lines(fh, origin)
            else:
                values = json_array_items(fh, origin, "documents", block_bytes)
            nulls = 0
            for where, value in values:
                document = _document_text(value, where, fields)
                if document is None:
                    nulls += 1
                    continue
                writer.add_document(document)
            if nulls:
                found = {"null_rows": nulls}
    writer.end_document()
    return {"documents": writer.documents - before} | found


def write_documents(dest: Path, origin: str, feed: Callable[[CorpusWriter], Counts]) -> Counts:
    """Write `dest` (atomically) with what `feed` gives a CorpusWriter; return the corpus's
    counts and what `feed` returned besides its documents. An empty corpus is bad input
    naming `origin`."""
    with atomic_file(dest) as tmp, open(tmp, "w", encoding="utf-8", newline="") as out:
        writer = CorpusWriter(out)
        found = feed(writer)
        counts = writer.close()
        if not counts["documents"]:
            raise BadInput(f"{origin}: empty corpus (no text)")
    return counts | {k: v for k, v in found.items() if k != "documents"}


def write_corpus(
    source: Path,
    origin: str,
    dest: Path,
    *,
    fields: Fields = DEFAULT_FIELDS,
    one_document: bool = False,
    block_bytes: int = READ_BYTES,
) -> Counts:
    """Normalise a text or JSON (Lines) corpus file (format by its name) into `dest`; return
    its counts.

    `one_document`: plain text is one document whatever it holds (`<|endoftext|>` dropped),
    for a corpus that is one work. Plain text is read `block_bytes` at a time. An empty
    result is bad input naming `origin`.
    """
    return write_documents(
        dest,
        origin,
        lambda writer: feed_corpus(
            writer, source, origin, fields=fields, one_document=one_document,
            block_bytes=block_bytes,
        ),
    )  # fmt: skip


def render_corpus(docs: Sequence[str]) -> str:
    """Clean documents (as the stdlib builder makes them) as the text of `corpus.txt`."""
    return DOC_SEPARATOR.join(docs) + "\n"


# --------------------------------------------------------------------------- instructions


def instruct_names(fields: Fields) -> dict[str, str]:
    """Our key -> the data set's key, for the instruction fields it has (input may be absent)."""
    names = {"instruction": fields.instruction, "input": fields.input, "output": fields.output}
    return {ours: theirs for ours, theirs in names.items() if theirs}


def _records(value: Any, origin: str, fields: Fields = DEFAULT_FIELDS) -> list[Record]:
    if not isinstance(value, list) or not value:
        raise BadInput(f"{origin}: expected a non-empty JSON list of instruction records")
    names = instruct_names(fields)
    records = []
    for i, item in enumerate(value):
        where = f"{origin}: record {i}"
        if not isinstance(item, dict):
            raise BadInput(f"{where}: expected an object with keys {', '.join(names.values())}")
        missing = [theirs for theirs in names.values() if theirs not in item]
        if missing:
            raise BadInput(f"{where}: missing key(s) {', '.join(missing)} (data.columns)")
        bad = [theirs for theirs in names.values() if not isinstance(item[theirs], str)]
        if bad:
            raise BadInput(f"{where}: key(s) {', '.join(bad)} must be strings")
        record = {ours: item[theirs] for ours, theirs in names.items()}
        records.append(checked_record(record, where))
    return records


def checked_record(record: dict[str, str], where: str) -> Record:
    """An Alpaca record in our key order (a missing input empty); empty text is bad input."""
    if not record["instruction"].strip() or not record["output"].strip():
        raise BadInput(f"{where}: empty instruction or output")
    return {k: record.get(k, "") for k in INSTRUCT_KEYS}


def _json_or_lines(text: str, origin: str) -> Any:
    """A whole JSON document, or the list of values of JSON Lines (two or more objects)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        whole_error = exc
    except (ValueError, RecursionError) as exc:
        raise BadInput(f"{origin}: not valid JSON ({_json_problem(exc)})") from None
    lines = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    if len(lines) < 2 or not lines[0][1].lstrip().startswith("{"):
        raise BadInput(f"{origin}: not valid JSON ({whole_error})")
    return [_loads(line, f"{origin}: line {n}", "JSON Lines") for n, line in lines]


def parse_instructions(text: str, origin: str, fields: Fields = DEFAULT_FIELDS) -> list[Record]:
    """A JSON list of Alpaca records, or JSON Lines of them (one record per line)."""
    return _records(_json_or_lines(text, origin), origin, fields)


def parse_alpaca(text: str, origin: str) -> list[Record]:
    """Strictly a JSON list of Alpaca records (the format alpaca-instructions ships in)."""
    return _records(_loads(text, origin), origin)


def render_instructions(records: Sequence[Record]) -> str:
    return json.dumps(list(records), indent=1, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- classification


def _single_line(text: str) -> str:
    """Tabs and line breaks as spaces (other spacing kept as it is)."""
    return re.sub(r"[\t\n\r\v\f\x1c-\x1e\x85\u2028\u2029]", " ", text)


def check_labels(rows: list[tuple[str, str]], origin: str) -> list[tuple[str, str]]:
    labels = sorted({label for label, _ in rows})
    if len(labels) < 2:
        raise BadInput(
            f"{origin}: classification data needs at least 2 labels, found {len(labels)}"
            + (f" ({labels[0]})" if labels else "")
        )
    return rows


def labelled_row(label: str, text: str, where: str) -> tuple[str, str]:
    label, text = _single_line(label).strip(), _single_line(text).strip()
    if not label or not text:
        raise BadInput(f"{where}: expected label and text, one of them is empty")
    return label, text


def parse_tsv(text: str, origin: str) -> list[tuple[str, str]]:
    """`label<TAB>text` lines (blank lines skipped); tabs inside the text become spaces."""
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        label, sep, rest = line.partition("\t")
        if not sep:
            raise BadInput(f"{origin}: line {n}: expected label<TAB>text, found no tab")
        rows.append(labelled_row(label, rest, f"{origin}: line {n}"))
    return check_labels(rows, origin)


def parse_csv(text: str, origin: str) -> list[tuple[str, str]]:
    """CSV rows `label,text` (quoted as CSV quotes them); a `label,text` header is skipped."""
    rows: list[tuple[str, str]] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for record in reader:
            n = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if not rows and [c.strip().lower() for c in record] == ["label", "text"]:
                continue
            if len(record) < 2:
                raise BadInput(f"{origin}: line {n}: expected label,text, found 1 field")
            rows.append(labelled_row(record[0], ",".join(record[1:]), f"{origin}: line {n}"))
    except csv.Error as exc:
        raise BadInput(f"{origin}: line {reader.line_num}: not valid CSV ({exc})") from None
    return check_labels(rows, origin)


def parse_labelled_json(
    text: str, origin: str, fields: Fields = DEFAULT_FIELDS
) -> list[tuple[str, str]]:
    """A JSON list, or JSON Lines, of objects {"label": str or int, "text": str} (the keys
    as `fields` names them)."""
    values = _json_or_lines(text, origin)
    if not isinstance(values, list):
        raise BadInput(f"{origin}: expected a JSON list of objects with label and text")
    label_key, text_key = fields.label, fields.label_text
    rows = []
    for i, item in enumerate(values):
        where = f"{origin}: record {i}"
        label = item.get(label_key) if isinstance(item, dict) else None
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise BadInput(
                f'{where}: expected an object with a "{label_key}" (string or integer; '
                f"{fields.key('label')})"
            )
        if not isinstance(item.get(text_key), str):
            raise BadInput(
                f'{where}: expected an object with a string "{text_key}" '
                f"({fields.key('label_text')})"
            )
        rows.append(labelled_row(str(label), item[text_key], where))
    return check_labels(rows, origin)


def parse_classify(
    text: str, origin: str, fields: Fields = DEFAULT_FIELDS
) -> list[tuple[str, str]]:
    """JSON (Lines) when the text starts with `[` or `{`, TSV when its first line has a tab,
    else CSV."""
    first = next((line for line in text.split("\n") if line.strip()), "")
    if not first:
        raise BadInput(f"{origin}: empty classification file")
    if first.lstrip().startswith(("[", "{")):
        return parse_labelled_json(text, origin, fields)
    return parse_tsv(text, origin) if "\t" in first else parse_csv(text, origin)


def render_classify(rows: Sequence[tuple[str, str]]) -> str:
    return "".join(f"{label}\t{text}\n" for label, text in rows)


# --------------------------------------------------------------------------- by kind

RENDERERS: dict[Kind, Callable[[Any], str]] = {
    "corpus": render_corpus,
    "instruct": render_instructions,
    "classify": render_classify,
}


def render_dataset(kind: Kind, items: Items) -> str:
    """The text of the output file of a kind."""
    return RENDERERS[kind](items)


def counts(kind: Kind, items: Items) -> Counts:
    """Record counts for the provenance file."""
    if kind == "corpus":
        return {"documents": len(items), "characters": sum(len(d) for d in items)}
    if kind == "instruct":
        return {"records": len(items)}
    by_label = Counter(label for label, _ in items)
    return {"lines": len(items), "labels": dict(sorted(by_label.items()))}


def write_items(kind: Kind, items: Items, dest: Path) -> Counts:
    """Write already-normalised items of a kind as its output file; return the counts."""
    with atomic_file(dest) as tmp:
        tmp.write_bytes(render_dataset(kind, items).encode("utf-8"))
    return counts(kind, items)


def parsed(kind: Kind, parse: Callable[[str, str], Items]) -> Normaliser:
    """A normaliser that reads a whole (small) file, parses it and writes the kind's file."""

    def normalise(source: Path, origin: str, dest: Path) -> Counts:
        return write_items(kind, parse(decode_text(source.read_bytes(), origin), origin), dest)

    return normalise


NORMALISERS: dict[Kind, Normaliser] = {
    "corpus": write_corpus,
    "instruct": parsed("instruct", parse_instructions),
    "classify": parsed("classify", parse_classify),
}
