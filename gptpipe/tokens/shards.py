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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from gptpipe.errors import BadInput
from gptpipe.fsutil import read_json
from gptpipe.outputs import folder_kind

if TYPE_CHECKING:  # torch is imported where batches are made: sharding never needs it
    import torch

MANIFEST = "manifest.json"
SHARDS_FOLDER = folder_kind("shards folder", {MANIFEST})  # what gptpipe.outputs recognises
COLUMN = "tokens"
SHARD_SPLITS = ("train", "val")  # the token streams of a shards folder
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
        vocab = manifest["vocab_size"]
        if not 1 <= vocab <= 2**32:
            raise ValueError(f"vocab_size {vocab} is out of range")
        if not 0 <= manifest["eot_id"] < vocab:
            raise ValueError(f"eot_id {manifest['eot_id']} is not an id of the vocabulary")
        if manifest["dtype"] == "uint16" and vocab > 65536:
            raise ValueError(f"dtype uint16 cannot hold the ids of a {vocab}-id vocabulary")
        if not isinstance(manifest["tokenizer_hash"], str):
            raise ValueError("tokenizer_hash is not a string")
        for split in SHARD_SPLITS:
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


def check_ids(path: Path, array: np.ndarray, vocab_size: int) -> None:
    """Every id must index the vocabulary (else training fails with an IndexError deep in
    the embedding). One pass over the memory-mapped shard, about a GB/s."""
    if len(array) and int(array.max()) >= vocab_size:
        raise BadInput(
            f"{path}: holds token id {int(array.max())}, outside the vocabulary of "
            f"{vocab_size} ids (a manifest or tokenizer that does not match the shards)"
        )


def _split_arrays(
    shards_dir: Path, split: str, verify: bool, vocab_size: int | None = None
) -> tuple[dict, list[np.ndarray]]:
    """The split's shards, each checked against the manifest and its ids against the
    vocabulary (the manifest's, or the smaller `vocab_size` of the model that reads them)."""
    manifest = read_manifest(shards_dir)
    info = _split_info(manifest, shards_dir, split)
    vocab = int(manifest["vocab_size"]) if vocab_size is None else vocab_size
    vocab = min(vocab, int(manifest["vocab_size"]))
    arrays = []
    for s in info["shards"]:
        path = Path(shards_dir) / s["name"]
        array = read_shard(
            path, manifest["dtype"], int(s["tokens"]), s.get("sha256") if verify else None
        )
        check_ids(path, array, vocab)
        arrays.append(array)
    return manifest, arrays


def load_split(
    shards_dir: Path | str, split: str, verify: bool = True, vocab_size: int | None = None
) -> np.ndarray:
    """All token ids of a split in order, 1-D, in the manifest's dtype.

    Memory-mapped (read-only) when the split is one shard; a concatenated copy otherwise.
    `verify` checks each file's sha256 against the manifest (one read of the file).
    """
    manifest, arrays = _split_arrays(Path(shards_dir), split, verify, vocab_size)
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
        self,
        shards_dir: Path | str,
        split: str,
        block_size: int,
        verify: bool = True,
        vocab_size: int | None = None,
    ) -> None:
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        self.shards_dir = Path(shards_dir)
        self.split = split
        self.block_size = block_size
        self.manifest, self._arrays = _split_arrays(self.shards_dir, split, verify, vocab_size)
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

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """x, y as int64 tensors of shape (len(indices), block_size); y is x shifted by one."""
        import torch

        rows = np.stack([self.window(int(i)) for i in indices]) if len(indices) else None
        if rows is None:
            empty = torch.empty((0, self.block_size), dtype=torch.int64)
            return empty, empty.clone()
        data = torch.from_numpy(rows)
        return data[:, :-1].contiguous(), data[:, 1:].contiguous()
