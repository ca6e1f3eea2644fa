"""safetensors I/O one tensor at a time: lazy tensors, header reading and streamed writing, so
large models (GPT-2 XL: 6 GB in float32) never need two copies in memory.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open

from gptpipe.errors import BadInput

# The language-model head: the same tensor as `wte.weight` (weight tying, as GPT-2), so it is
# never stored (model folders, training checkpoints, conversions) and is re-tied on load.
TIED = "lm_head.weight"

T = TypeVar("T")


def without_tied(state: Mapping[str, T]) -> dict[str, T]:
    """A state dict (or any name -> tensor table) without the tied head: each tensor once."""
    return {name: value for name, value in state.items() if name != TIED}


@dataclass(frozen=True)
class LazyTensor:
    """A tensor known by shape, read (and converted to our format, float32) on demand."""

    shape: tuple[int, ...]
    load: Callable[[], torch.Tensor]


def safetensors_header(path: Path) -> dict[str, dict]:
    """The tensor table of a safetensors file (names -> dtype, shape, offsets), no data read."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(fh.read(n))
    except FileNotFoundError:
        raise BadInput(f"{path}: not found") from None
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not a safetensors file ({exc})") from None
    if not isinstance(header, dict):
        raise BadInput(f"{path}: not a safetensors file (header is not a JSON object)")
    header.pop("__metadata__", None)
    data_bytes = path.stat().st_size - 8 - n
    for name, entry in header.items():
        problem = _entry_problem(entry, data_bytes)
        if problem:
            raise BadInput(f"{path}: corrupt safetensors header (tensor {name!r}: {problem})")
    return header


_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1}
_ITEM_BYTES |= {"U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8}


def _entry_problem(entry: Any, data_bytes: int) -> str | None:
    """What is wrong with one tensor entry of a safetensors header, if anything."""
    if not isinstance(entry, dict):
        return "entry is not an object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _ITEM_BYTES:
        return f"unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        return f"shape {shape!r} is not a list of sizes"
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        return f"data_offsets {offsets!r} is not [begin, end]"
    begin, end = offsets
    if not 0 <= begin <= end <= data_bytes:
        return f"bytes {begin}..{end} lie outside the file's {data_bytes} data bytes (truncated?)"
    if end - begin != _ITEM_BYTES[dtype] * math.prod(shape):
        return f"{end - begin} bytes do not hold a {dtype} tensor of shape {shape}"
    return None


# --------------------------------------------------------------------------- streaming
# Large models (GPT-2 XL: 1.5B parameters, 6 GB in float32) are converted, saved and loaded
# one tensor at a time, so no step ever holds two copies of the weights.


def write_safetensors(
    path: Path | str, tensors: Mapping[str, LazyTensor], metadata: dict[str, str] | None = None
) -> None:
    """Write a safetensors file from lazy float32 tensors, one tensor in memory at a time.

    The format: an 8-byte little-endian header length, a JSON header (name -> dtype, shape,
    byte range; padded with spaces to 8-byte alignment), then the tensors' bytes in order.
    """
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, tensor in tensors.items():
        size = 4 * math.prod(tensor.shape)
        header[name] = {
            "dtype": "F32",
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-(8 + len(blob)) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for name, lazy in tensors.items():
            value = lazy.load()
            if tuple(value.shape) != tuple(lazy.shape) or value.dtype != torch.float32:
                raise BadInput(
                    f"tensor {name}: got {value.dtype} {tuple(value.shape)}, "
                    f"expected float32 {tuple(lazy.shape)}"
                )
            value = value.detach().to("cpu").contiguous()
            if value.numel():
                fh.write(value.numpy().data.cast("B"))
            del value


def lazy_tensors(path: Path | str) -> dict[str, LazyTensor]:
    """The tensors of a safetensors file, each read (as float32) when asked for."""
    path = Path(path)
    header = safetensors_header(path)
    return {
        name: LazyTensor(tuple(entry["shape"]), _lazy_loader(path, name))
        for name, entry in header.items()
    }


def _lazy_loader(path: Path, name: str) -> Callable[[], torch.Tensor]:
    def load() -> torch.Tensor:
        # One memory map per tensor: mapped pages count as resident memory while mapped.
        try:
            with safe_open(str(path), framework="pt") as fh:
                tensor = fh.get_tensor(name)
                out = torch.empty(tensor.shape, dtype=torch.float32)
                out.copy_(tensor)
                return out
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
            raise BadInput(f"{path}: cannot read tensor {name} ({exc})") from None

    return load
