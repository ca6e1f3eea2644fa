"""A bounded, deterministic sample of a corpus file, spread over the whole file, for learning a
vocabulary (`tokenizer.sample_bytes`).

Why: the BPE trainer's time and memory grow with the text it counts. On a corpus of many GB a
vocabulary learned from ~100 MB is as good (pre-token frequencies settle long before that)
and its training time stops growing with the corpus. Taking the first 100 MB would learn the
vocabulary of whatever the corpus starts with (one source, one year, one language), so the
sample is made of windows spaced evenly over the whole file instead.

The rule (a function of the file's bytes and `sample_bytes` alone, so the same corpus and
params give the same sample, and with it the same tokenizer):

- A file of at most `sample_bytes` bytes, or `sample_bytes` 0, is read whole, exactly as
  before sampling existed (`iter_texts`).
- Otherwise the sample is n windows of `sample_bytes // n` bytes: n is
  `ceil(sample_bytes / WINDOW_BYTES)` (windows of up to 1 MiB), but at least 64 windows when
  that leaves each 64 KiB or more (so that a small sample is spread too). Window i is
  looked for from byte `i * size // n`: it starts at the first document start (just after
  a `<|endoftext|>` line) in the next window's worth of bytes, or, inside a document longer
  than that, at the first safe cut (a pre-token boundary, see `gptpipe.tokens.corpus._CUT`);
  it ends after the last whole document that fits, or at the last safe cut when none ends
  inside it. Windows are read in file order and never overlap.

The file is read with `seek`, two windows' worth of bytes at most per window, so reading
costs about `2 * sample_bytes` whatever the corpus size, and memory holds one window.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gptpipe.errors import BadInput
from gptpipe.tokens.corpus import _CUT, _cut, iter_texts, piece_texts

WINDOW_BYTES = 1 << 20  # the largest window
MIN_WINDOWS = 64  # the fewest windows, when each still gets at least MIN_WINDOW_BYTES
MIN_WINDOW_BYTES = 64 << 10
# A document separator line (the line break before it belongs to it); a document starts
# right after one.
_SEPARATOR = re.compile(rb"\n<\|endoftext\|>\r*\n")


@dataclass
class SampleStats:
    """What sampling saw: the corpus size, the bytes read from the file (the sample plus the
    look for where windows start), the bytes of text kept, and the number of windows
    (0: the whole file was read)."""

    corpus_bytes: int = 0
    read_bytes: int = 0
    sampled_bytes: int = 0
    windows: int = 0


def sample_texts(
    path: Path | str,
    sample_bytes: int,
    stats: SampleStats | None = None,
    window_bytes: int = WINDOW_BYTES,
) -> Iterator[str]:
    """The documents (and safe pieces of long ones) of a sample of at most `sample_bytes`
    bytes of the corpus file `path`, spread over the whole file (module docstring); the whole
    corpus, as `iter_texts` reads it, when it is no larger than that or `sample_bytes` is 0.

    `stats` is filled in as the sample is read. A missing file, or a window that is not
    UTF-8, is bad input naming the file (and the byte offset).
    """
    if sample_bytes < 0 or window_bytes < 1:
        raise ValueError("sample_bytes must be >= 0 and window_bytes >= 1")
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: corpus file not found")
    stats = stats if stats is not None else SampleStats()
    size = path.stat().st_size
    stats.corpus_bytes = size
    if sample_bytes == 0 or size <= sample_bytes:

        def count(data: bytes) -> None:
            stats.read_bytes += len(data)
            stats.sampled_bytes += len(data)

        yield from iter_texts(path, on_bytes=count)
        return
    windows = max(
        math.ceil(sample_bytes / window_bytes), min(MIN_WINDOWS, sample_bytes // MIN_WINDOW_BYTES)
    )
    window = sample_bytes // windows
    stats.windows = windows
    end = 0  # where the previous window ended
    with path.open("rb") as fh:
        for i in range(windows):
            found = _window(fh, max(i * size // windows, end), window, stats)
            if found is None:
                continue
            offset, data = found
            end = offset + len(data)
            stats.sampled_bytes += len(data)
            yield from piece_texts(path, offset, data)


def _window(fh: BinaryIO, start: int, window: int, stats: SampleStats) -> tuple[int, bytes] | None:
    """The window looked for from `start`: (its offset in the file, its bytes), or None when
    the rest of the file holds no place to start one."""
    back = min(start, 32)  # a few bytes before `start`: a separator may end right at it
    base = start - back
    fh.seek(base)
    wanted = back + 2 * window
    buffer = fh.read(wanted)
    stats.read_bytes += len(buffer)
    if start == 0:
        begin = 0
    else:
        scan = buffer[: back + window]
        found = next((m for m in _SEPARATOR.finditer(scan) if m.end() >= back), None)
        if found is None:  # inside a document longer than a window: a safe cut
            found = _CUT.search(scan, back)
        begin = found.end() if found is not None else _char_start(scan, back)
    data = buffer[begin : begin + window]
    if len(buffer) == wanted or begin + window < len(buffer):  # not at the end of the file
        data = data[: _window_end(data)]
    return (base + begin, data) if data else None


def _window_end(data: bytes) -> int:
    """Where a window ends: after its last whole document, else at its last safe cut, else
    before its last (perhaps incomplete) character."""
    last = len(data)
    while (last := data.rfind(b"\n<|endoftext|>", 0, last)) >= 0:
        separator = _SEPARATOR.match(data, last)
        if separator is not None:
            return separator.end()
    end = _cut(data)
    if end:
        return end
    end = len(data) - 1
    while end > 0 and data[end] & 0xC0 == 0x80:  # continuation bytes are 0b10xxxxxx
        end -= 1
    return end


def _char_start(data: bytes, at: int) -> int:
    """The first UTF-8 character start at or after `at`."""
    while at < len(data) and data[at] & 0xC0 == 0x80:
        at += 1
    return at
