"""Reading a corpus: documents separated by `<|endoftext|>`, and the file in pieces that end at
safe cut points (for streaming encoders).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

from gptpipe.errors import BadInput
from gptpipe.tokenizer.special import EOT


def iter_documents(
    path: Path | str, on_bytes: Callable[[bytes], None] | None = None
) -> Iterator[str]:
    """Stream the documents of a corpus file: text separated by lines that are exactly EOT.

    The corpus is documents joined with "\\n<|endoftext|>\\n", so the newline before a
    separator line belongs to the separator. Empty documents are skipped. `on_bytes` sees
    every raw line as read (for a checksum or a progress bar). A missing file or bytes that
    are not UTF-8 are bad input naming the file (and the byte offset).
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: corpus file not found")
    separator = EOT.encode("utf-8")
    lines: list[str] = []
    offset = 0
    with path.open("rb") as fh:
        for raw in fh:
            if on_bytes is not None:
                on_bytes(raw)
            if raw.rstrip(b"\r\n") == separator:
                if lines:
                    lines[-1] = lines[-1].removesuffix("\n").removesuffix("\r")
                    document = "".join(lines)
                    if document:
                        yield document
                lines = []
            else:
                try:
                    lines.append(raw.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise BadInput(
                        f"{path}: not UTF-8 text (invalid byte at offset {offset + exc.start})"
                    ) from None
            offset += len(raw)
    document = "".join(lines)
    if document:
        yield document


# --------------------------------------------------------------------------- encoding

# Where the corpus reader may cut the byte stream, so that each piece encodes on its own
# exactly as within the whole (tiktoken applies BPE per pre-token; both split patterns
# have a pre-token boundary at these places, and no pre-token spans them):
# - right after a document separator line (`\n<|endoftext|>\n`, `\r`s allowed);
# - after a "\n" between a printable ASCII character and an ASCII letter or digit;
# - between an ASCII letter and " " + an ASCII letter (" word" is one pre-token).
# Cuts fall on ASCII bytes, so never inside a UTF-8 sequence.
_CUT = re.compile(rb"\n<\|endoftext\|>\r*\n|[\x21-\x7e]\n(?=[A-Za-z0-9])|[A-Za-z](?= [A-Za-z])")
# A separator line, with the line break before it (which belongs to the separator).
_SEPARATOR = re.compile(r"(?:\r?\n)?^<\|endoftext\|>\r*(?:\n|\Z)", re.MULTILINE)
BLOCK_BYTES = 4 << 20


def split_documents(text: str) -> list[str]:
    """`_SEPARATOR.split(text)`, found with `str.find`: the regex tries every position while
    holding the GIL (about 200 ms per 4 MB), which serialised the encoding threads."""
    pieces: list[str] = []
    start = 0  # start of the current piece
    search = 0
    while (at := text.find(EOT, search)) >= 0:
        search = at + len(EOT)
        if at > 0 and text[at - 1] != "\n":
            continue  # not at the start of a line
        end = search
        while end < len(text) and text[end] == "\r":
            end += 1
        if end < len(text):
            if text[end] != "\n":
                continue  # more text on the separator's line
            end += 1
        begin = at
        if at > start and text[at - 1] == "\n":  # the line break before belongs to it
            begin = at - 2 if at - 1 > start and text[at - 2] == "\r" else at - 1
        pieces.append(text[start:begin])
        start = search = end
    pieces.append(text[start:])
    return pieces


def _cut(buffer: bytes) -> int:
    """The last safe cut in `buffer` (0 when there is none)."""
    size = len(buffer)
    for window in (1 << 16, 1 << 20, size):
        last = None
        for last in _CUT.finditer(buffer, max(0, size - window)):  # noqa: B007
            pass
        if last is not None:
            return last.end()
    return 0


def read_pieces(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, bytes]]:
    """The corpus as (offset, bytes) pieces of about `block_bytes`, cut only at safe places.

    Memory stays at a few blocks whatever the file size (a file with no safe place to cut,
    such as one endless line, is read whole).
    """
    offset = 0
    carry = b""
    with path.open("rb") as fh:
        while block := fh.read(block_bytes):
            buffer = carry + block
            cut = _cut(buffer)
            if cut:
                yield offset, buffer[:cut]
                offset += cut
                carry = buffer[cut:]
            else:
                carry = buffer
    if carry:
        yield offset, carry


def iter_texts(
    path: Path | str,
    block_bytes: int = BLOCK_BYTES,
    on_bytes: Callable[[bytes], None] | None = None,
) -> Iterator[str]:
    """The corpus's text with separator lines removed, in pieces of about `block_bytes` cut at
    document boundaries and at safe cut points inside documents (see `_CUT`): pre-tokens of
    the pieces are exactly those of the documents (with either split pattern), so a counter
    gets the same counts as from `iter_documents`, and memory stays at a few blocks however
    long a document is (one multi-GB document with no `<|endoftext|>` included).
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: corpus file not found")
    for offset, data in read_pieces(path, block_bytes):
        if on_bytes is not None:
            on_bytes(data)
        yield from piece_texts(path, offset, data)


def piece_texts(path: Path, offset: int, data: bytes) -> Iterator[str]:
    """The non-empty texts of a piece of the corpus at byte `offset` of `path` (whole
    documents, or a cut one's safe part): UTF-8, else bad input naming the file and byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(
            f"{path}: not UTF-8 text (invalid byte at offset {offset + exc.start})"
        ) from None
    for document in split_documents(text):
        if document:
            yield document


def _ends_document(data: bytes) -> bool:
    """Whether a piece ends with a separator line (so the next starts a new document)."""
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    return data.endswith(b"\n") and data[start:].rstrip(b"\r\n") == EOT.encode("ascii")
