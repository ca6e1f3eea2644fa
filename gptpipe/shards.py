"""Token shards: Arrow IPC files of token ids per split, a manifest, and the training loader.

Layout of a shards folder (the `shard` stage's output):

- `train-00000.arrow`, `train-00001.arrow`, ..., `val-00000.arrow`, ...: Arrow IPC files
  (random-access format) with one column `tokens` (uint16, or uint32 for vocabularies over
  65535 ids) in a single record batch, so a file maps to one zero-copy numpy array.
- `manifest.json`: dtype, end-of-text id, vocabulary size, tokenizer hash, and per split the
  total token count and each file's name, token count and sha256.

A split is one token stream: its files concatenated in manifest order. Training windows of
`block_size + 1` tokens start at 0, T, 2T, ... of that stream and MAY cross file boundaries
(`TokenWindows` gathers the pieces), so no tokens are lost at shard ends.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from gptpipe.errors import BadInput
from gptpipe.fsutil import read_json, write_json
from gptpipe.tokenizer import EOT

if TYPE_CHECKING:  # torch is imported where batches are made: sharding never needs it
    import torch

MANIFEST = "manifest.json"
COLUMN = "tokens"
SPLITS = ("train", "val")
FORMAT_VERSION = 1
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
_ARROW_TYPES = {"uint16": pa.uint16(), "uint32": pa.uint32()}


def dtype_for_vocab(vocab_size: int) -> str:
    """The smallest unsigned dtype that holds every id of a vocabulary."""
    return "uint16" if vocab_size <= 65535 else "uint32"


def shard_name(split: str, index: int) -> str:
    """File name of a split's `index`-th shard."""
    return f"{split}-{index:05d}.arrow"


# --------------------------------------------------------------------------- reading


def read_manifest(shards_dir: Path | str) -> dict[str, Any]:
    """Read and check `manifest.json` of a shards folder; anything malformed is BadInput."""
    path = Path(shards_dir) / MANIFEST
    if not path.is_file():
        raise BadInput(f"{path}: shard manifest not found (run `gptpipe shard` first)")
    manifest = read_json(path)
    try:
        if manifest["dtype"] not in DTYPES:
            raise ValueError(f"dtype {manifest['dtype']!r} is not one of {', '.join(DTYPES)}")
        for key in ("eot_id", "vocab_size"):
            if not isinstance(manifest[key], int):
                raise ValueError(f"{key} is not an integer")
        if not isinstance(manifest["tokenizer_hash"], str):
            raise ValueError("tokenizer_hash is not a string")
        for split in SPLITS:
            info = manifest["splits"][split]
            shards = info["shards"]
            if [s["name"] for s in shards] != info["files"]:
                raise ValueError(f"splits.{split}.files does not match splits.{split}.shards")
            if sum(int(s["tokens"]) for s in shards) != int(info["tokens"]):
                raise ValueError(f"splits.{split}.tokens is not the sum of its shards")
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"{path}: not a valid shard manifest ({exc!s})") from None
    return manifest


def _split_info(manifest: dict[str, Any], shards_dir: Path, split: str) -> dict[str, Any]:
    if split not in manifest["splits"]:
        raise BadInput(
            f"{Path(shards_dir) / MANIFEST}: no split {split!r}; "
            f"allowed: {', '.join(manifest['splits'])}"
        )
    return manifest["splits"][split]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_shard(path: Path, dtype: str, tokens: int, sha256: str | None = None) -> np.ndarray:
    """One shard file as a read-only, memory-mapped 1-D numpy array.

    Checks what the manifest promises: the file exists, has the right checksum (when given),
    is an Arrow IPC file with one `tokens` column of `dtype`, and holds `tokens` ids.
    """
    if not path.is_file():
        raise BadInput(f"{path}: shard file not found")
    if sha256 is not None and _sha256_file(path) != sha256:
        raise BadInput(f"{path}: shard is corrupt (sha256 differs from the manifest)")
    try:
        source = pa.memory_map(str(path), "r")
        reader = pa.ipc.open_file(source)
        schema = reader.schema
        if schema.names != [COLUMN] or schema.field(COLUMN).type != _ARROW_TYPES[dtype]:
            raise BadInput(f"{path}: expected one column '{COLUMN}' of {dtype}, found {schema}")
        if reader.num_record_batches == 0:
            array = np.empty(0, dtype=DTYPES[dtype])
        elif reader.num_record_batches == 1:
            column = reader.get_batch(0).column(0)
            array = column.to_numpy(zero_copy_only=True)
        else:  # not written by us, but still readable
            array = reader.read_all().column(0).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise BadInput(f"{path}: not a readable Arrow shard ({exc!s})") from None
    if len(array) != tokens:
        raise BadInput(f"{path}: holds {len(array)} tokens, the manifest says {tokens}")
    return array


def _split_arrays(shards_dir: Path, split: str, verify: bool) -> tuple[dict, list[np.ndarray]]:
    manifest = read_manifest(shards_dir)
    info = _split_info(manifest, shards_dir, split)
    arrays = [
        read_shard(
            Path(shards_dir) / s["name"],
            manifest["dtype"],
            int(s["tokens"]),
            s.get("sha256") if verify else None,
        )
        for s in info["shards"]
    ]
    return manifest, arrays


def load_split(shards_dir: Path | str, split: str, verify: bool = True) -> np.ndarray:
    """All token ids of a split in order, 1-D, in the manifest's dtype.

    Memory-mapped (read-only) when the split is one shard; a concatenated copy otherwise.
    `verify` checks each file's sha256 against the manifest (one read of the file).
    """
    manifest, arrays = _split_arrays(Path(shards_dir), split, verify)
    if len(arrays) == 1:
        return arrays[0]
    if not arrays:
        return np.empty(0, dtype=DTYPES[manifest["dtype"]])
    return np.concatenate(arrays)


class TokenWindows:
    """Non-overlapping training windows over one split's token stream.

    Window i covers stream positions [i*T, i*T + T + 1): x is its first T tokens, y the last T
    (x shifted by one). The shards stay memory-mapped; a window crossing a shard boundary is
    gathered from both files.
    """

    def __init__(
        self, shards_dir: Path | str, split: str, block_size: int, verify: bool = True
    ) -> None:
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        self.shards_dir = Path(shards_dir)
        self.split = split
        self.block_size = block_size
        self.manifest, self._arrays = _split_arrays(self.shards_dir, split, verify)
        self._arrays = [a for a in self._arrays if len(a)]
        lengths = np.array([len(a) for a in self._arrays], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.num_tokens = int(self._starts[-1])
        needed = block_size + 1
        if self.num_tokens < needed:
            raise BadInput(
                f"{self.shards_dir}: split '{split}' has {self.num_tokens} tokens, "
                f"fewer than one window needs ({needed} = block_size + 1)"
            )
        self._len = (self.num_tokens - 1) // block_size

    def __len__(self) -> int:
        return self._len

    def window(self, index: int) -> np.ndarray:
        """Tokens of window `index` (length block_size + 1) as int64."""
        if not 0 <= index < self._len:
            raise IndexError(f"window {index} out of range 0..{self._len - 1}")
        start = index * self.block_size
        stop = start + self.block_size + 1
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        out = np.empty(stop - start, dtype=np.int64)
        filled = 0
        shard = first
        while filled < len(out):
            begin = start + filled - int(self._starts[shard])
            piece = self._arrays[shard][begin : begin + len(out) - filled]
            out[filled : filled + len(piece)] = piece
            filled += len(piece)
            shard += 1
        return out

    def get_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """x, y as int64 tensors of shape (len(indices), block_size); y is x shifted by one."""
        import torch

        rows = np.stack([self.window(int(i)) for i in indices]) if len(indices) else None
        if rows is None:
            empty = torch.empty((0, self.block_size), dtype=torch.int64)
            return empty, empty.clone()
        data = torch.from_numpy(rows)
        return data[:, :-1].contiguous(), data[:, 1:].contiguous()


class WindowSampler:
    """Which windows each step's batch uses: epochs of seeded permutations, split across ranks.

    The global stream of window indices is perm(0) + perm(1) + ..., where perm(e) is a
    permutation of all windows seeded by (seed, e). Step s takes the global batch at positions
    [s*G, (s+1)*G) with G = batch_size * world_size (a batch may straddle two epochs), and rank
    r takes its slice [r*batch_size, (r+1)*batch_size) of it. Everything follows from
    (seed, step), so a resumed run sees the same batches, and no window repeats within an epoch.
    """

    def __init__(
        self, num_windows: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if num_windows < 1:
            raise ValueError("num_windows must be >= 1")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
        self.num_windows = num_windows
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.global_batch = batch_size * world_size
        self._perms: OrderedDict[int, np.ndarray] = OrderedDict()

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of all windows in `epoch` (a few recent epochs are cached)."""
        perm = self._perms.get(epoch)
        if perm is None:
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch])
            perm = rng.permutation(self.num_windows)
            self._perms[epoch] = perm
            while len(self._perms) > 3:
                self._perms.popitem(last=False)
        return perm

    def epoch(self, step: int) -> float:
        """Epochs completed (fractional) after `step` steps."""
        return step * self.global_batch / self.num_windows

    def indices(self, step: int) -> np.ndarray:
        """Window indices of this rank's batch at `step` (0-based), as int64."""
        if step < 0:
            raise ValueError("step must be >= 0")
        first = step * self.global_batch + self.rank * self.batch_size
        positions = np.arange(first, first + self.batch_size, dtype=np.int64)
        epochs = positions // self.num_windows
        offsets = positions % self.num_windows
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            out[mask] = self.permutation(int(epoch))[offsets[mask]]
        return out


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


@dataclass
class CorpusStats:
    """What reading the corpus saw: bytes, their sha256, and documents."""

    bytes: int = 0
    documents: int = 0
    sha256: str = ""


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


class _PieceEncoder:
    """Encodes corpus pieces; shared by the encoding threads (tiktoken releases the GIL)."""

    def __init__(self, tokenizer_dir: Path, dtype: str, name: str) -> None:
        from gptpipe.tokenizer import eot_id, load_tokenizer

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


def _ends_document(data: bytes) -> bool:
    """Whether a piece ends with a separator line (so the next starts a new document)."""
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    return data.endswith(b"\n") and data[start:].rstrip(b"\r\n") == EOT.encode("ascii")


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
