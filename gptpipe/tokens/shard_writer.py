"""Writing token shards: the corpus encoded in threads, the stream cut into train/val chunks,
Arrow IPC shard files and the manifest, in bounded memory.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from gptpipe.errors import BadInput
from gptpipe.fsutil import write_json
from gptpipe.tokenizer.special import EOT
from gptpipe.tokens.corpus import (
    BLOCK_BYTES,
    _ends_document,
    read_pieces,
    split_documents,
)
from gptpipe.tokens.shards import (
    _ARROW_TYPES,
    COLUMN,
    DTYPES,
    FORMAT_VERSION,
    MANIFEST,
    _sha256_file,
    shard_name,
)

# --------------------------------------------------------------------------- writing


class ShardWriter:
    """Appends token ids of one split and writes them as files of at most `shard_tokens`.

    Ids are copied into one preallocated shard-sized buffer, so the writer holds
    `shard_tokens` ids at most, never references to the caller's arrays (a view kept
    alive would pin its whole parent array and let memory grow with the corpus).
    """

    def __init__(self, out_dir: Path, split: str, dtype: str, shard_tokens: int) -> None:
        self.out_dir = Path(out_dir)
        self.split = split
        self.dtype = dtype
        self.shard_tokens = shard_tokens
        self.shards: list[dict[str, Any]] = []
        self._buffer: np.ndarray | None = None  # allocated on the first append
        self._filled = 0

    @property
    def tokens(self) -> int:
        """Tokens appended so far."""
        return sum(s["tokens"] for s in self.shards) + self._filled

    def append(self, tokens: np.ndarray) -> None:
        """Append ids (any integer array); full shards are written as they fill."""
        if self._buffer is None and len(tokens):
            self._buffer = np.empty(self.shard_tokens, dtype=DTYPES[self.dtype])
        while len(tokens):
            assert self._buffer is not None
            take = min(len(tokens), self.shard_tokens - self._filled)
            self._buffer[self._filled : self._filled + take] = tokens[:take]
            self._filled += take
            tokens = tokens[take:]
            if self._filled == self.shard_tokens:
                self._flush()

    def close(self) -> dict[str, Any]:
        """Write the last partial shard; return the split's manifest entry."""
        if self._filled:
            self._flush()
        self._buffer = None
        return {
            "tokens": sum(s["tokens"] for s in self.shards),
            "files": [s["name"] for s in self.shards],
            "shards": self.shards,
        }

    def _flush(self) -> None:
        assert self._buffer is not None
        name = shard_name(self.split, len(self.shards))
        path = self.out_dir / name
        write_shard(path, self._buffer[: self._filled], self.dtype)
        self.shards.append({"name": name, "tokens": self._filled, "sha256": _sha256_file(path)})
        self._filled = 0


def write_shard(path: Path, tokens: np.ndarray, dtype: str) -> None:
    """Write ids as an Arrow IPC file with one `tokens` column, one record batch."""
    array = pa.array(np.asarray(tokens, dtype=DTYPES[dtype]), type=_ARROW_TYPES[dtype])
    batch = pa.record_batch([array], names=[COLUMN])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Write `manifest.json` (inside an atomic output folder)."""
    write_json(Path(out_dir) / MANIFEST, manifest)


def new_manifest(
    *, dtype: str, eot_id: int, vocab_size: int, tokenizer_hash: str, **extra: Any
) -> dict[str, Any]:
    """The fixed part of a manifest; the caller adds `splits` and provenance."""
    return {
        "format": FORMAT_VERSION,
        "dtype": dtype,
        "eot_id": eot_id,
        "vocab_size": vocab_size,
        "tokenizer_hash": tokenizer_hash,
        "block_separator": EOT,
        **extra,
    }


class TrainValSplitter:
    """Cuts a token stream into chunks and sends each to the train or the val writer.

    Chunk i holds `chunk_tokens` tokens (the last chunk also takes the remainder shorter than
    a chunk) and goes to val when the i-th draw of a generator seeded by `seed` is below
    `val_fraction`. The last chunk is held back until the end so that, when the draws gave
    one split nothing, it goes there: every split gets at least one chunk, so a one-document
    corpus splits too. Deterministic for given (stream, chunk_tokens, val_fraction, seed).
    """

    def __init__(
        self,
        train: ShardWriter,
        val: ShardWriter,
        chunk_tokens: int,
        val_fraction: float,
        seed: int,
    ) -> None:
        self.writers = {"train": train, "val": val}
        self.chunk_tokens = chunk_tokens
        self.val_fraction = val_fraction
        self._rng = np.random.default_rng(seed)
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._held: tuple[np.ndarray, str] | None = None
        self.chunks = {"train": 0, "val": 0}

    def append(self, tokens: np.ndarray) -> None:
        """Add the next tokens of the stream."""
        self._buffer.append(tokens)
        self._buffered += len(tokens)
        if self._buffered < self.chunk_tokens:
            return
        data = np.concatenate(self._buffer)
        full = len(data) // self.chunk_tokens * self.chunk_tokens
        for start in range(0, full, self.chunk_tokens):
            chunk = data[start : start + self.chunk_tokens]
            split = "val" if self._rng.random() < self.val_fraction else "train"
            self._release()
            self._held = (chunk, split)
        rest = data[full:]
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)

    def close(self) -> int:
        """Flush the held chunk; return the number of chunks (the caller rejects fewer than 2)."""
        rest = np.concatenate(self._buffer) if self._buffer else np.empty(0, dtype=np.int64)
        if self._held is None:
            if len(rest):
                split = "val" if self._rng.random() < self.val_fraction else "train"
                self._held = (rest, split)
        elif len(rest):
            chunk, split = self._held
            self._held = (np.concatenate([chunk, rest]), split)
        self._buffer, self._buffered = [], 0
        if self._held is not None:
            chunk, split = self._held
            if self.chunks["val"] == 0 and sum(self.chunks.values()) > 0:
                split = "val"
            elif self.chunks["train"] == 0 and sum(self.chunks.values()) > 0:
                split = "train"
            self._held = (chunk, split)
            self._release()
        return sum(self.chunks.values())

    def _release(self) -> None:
        if self._held is not None:
            chunk, split = self._held
            self.writers[split].append(chunk)
            self.chunks[split] += 1
            self._held = None


@dataclass
class CorpusStats:
    """What reading the corpus saw: bytes, their sha256, and documents."""

    bytes: int = 0
    documents: int = 0
    sha256: str = ""


class _PieceEncoder:
    """Encodes corpus pieces; shared by the encoding threads (tiktoken releases the GIL)."""

    def __init__(self, tokenizer_dir: Path, dtype: str, name: str) -> None:
        from gptpipe.tokenizer.folder import eot_id, load_tokenizer

        self.encoding = load_tokenizer(tokenizer_dir)
        self.eot = eot_id(self.encoding)
        self.dtype = np.dtype(DTYPES[dtype])
        self.name = name

    def __call__(
        self, offset: int, data: bytes, continues: bool, final: bool
    ) -> tuple[np.ndarray, int]:
        """Token ids of one piece, `<|endoftext|>` after each non-empty document it ends.

        `continues`: the document open at the piece's start already has text (from earlier
        pieces). `final`: the piece ends the file, so its last document ends too. Returns the
        ids and the number of documents ended.
        """
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(
                f"{self.name}: not UTF-8 text (invalid byte at offset {offset + exc.start})"
            ) from None
        parts: list[np.ndarray] = []
        documents = 0
        pieces = split_documents(text)
        last = len(pieces) - 1
        for i, piece in enumerate(pieces):
            if piece:
                parts.append(
                    self.encoding.encode_to_numpy(
                        piece, allowed_special=set(), disallowed_special=()
                    )
                )
            if (i < last or final) and (piece or (i == 0 and continues)):
                parts.append(np.array([self.eot], dtype=np.uint32))
                documents += 1
        ids = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint32)
        return ids.astype(self.dtype, copy=False), documents


def encode_corpus(
    path: Path,
    tokenizer_dir: Path,
    dtype: str,
    workers: int = 1,
    stats: CorpusStats | None = None,
    on_bytes: Callable[[int], None] | None = None,
    block_bytes: int | None = None,
) -> Iterator[np.ndarray]:
    """Token ids of a corpus file, in order, `<|endoftext|>` after every document.

    Documents are separated by lines that are exactly `<|endoftext|>` (the line break
    before one belongs to it; empty documents are skipped), as `iter_documents` reads
    them. The file is streamed in pieces cut at safe places (`_CUT`) and encoded in
    `workers` threads (0: one per CPU core), at most two pieces per worker in flight,
    results taken in order: the ids are the same whatever the worker count, and memory is
    bounded whatever the file size (pieces of `block_bytes`, default BLOCK_BYTES). `stats`
    is filled in as the file is read; `on_bytes` sees the size of each piece read. Bytes
    that are not UTF-8 are BadInput naming the file and the offset.
    """
    workers = workers or os.cpu_count() or 1
    stats = stats if stats is not None else CorpusStats()
    digest = hashlib.sha256()

    def tasks() -> Iterator[tuple[int, bytes, bool, bool]]:
        continues = False
        previous: tuple[int, bytes] | None = None
        for offset, data in read_pieces(path, block_bytes or BLOCK_BYTES):
            digest.update(data)
            stats.bytes += len(data)
            if on_bytes is not None:
                on_bytes(len(data))
            if previous is not None:
                yield (*previous, continues, False)
                continues = not _ends_document(previous[1])
            previous = (offset, data)
        if previous is not None:
            yield (*previous, continues, True)
        stats.sha256 = digest.hexdigest()

    encode = _PieceEncoder(tokenizer_dir, dtype, str(path))
    if workers == 1:
        for task in tasks():
            ids, documents = encode(*task)
            stats.documents += documents
            yield ids
        return
    # Threads, not processes: tiktoken encodes without the GIL, so the pieces need no
    # pickling between processes and the workers share one copy of the ranks.
    pending: deque[Future[tuple[np.ndarray, int]]] = deque()
    with ThreadPoolExecutor(workers) as pool:
        for task in tasks():
            pending.append(pool.submit(encode, *task))
            while len(pending) >= 2 * workers or (pending and pending[0].done()):
                ids, documents = pending.popleft().result()
                stats.documents += documents
                yield ids
        while pending:
            ids, documents = pending.popleft().result()
            stats.documents += documents
            yield ids
