"""A small reader of TensorFlow checkpoints (OpenAI's GPT-2 release), without TensorFlow.

The `.index` file is an SSTable (blocks, optional Snappy compression, masked CRC32C
checksums) of BundleEntryProto messages; each entry locates one tensor in the data file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from gptpipe.errors import BadInput

# --------------------------------------------------------------------------- TF checkpoints

# TensorFlow's DataType enum values (types.proto) we read, with their torch dtypes.
TF_DTYPES = {1: torch.float32, 2: torch.float64, 14: torch.bfloat16, 19: torch.float16}
TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles padded to 20 bytes each + the 8-byte magic
BLOCK_TRAILER = 5  # compression type (1 byte) + masked crc32c (4 bytes)


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TensorFlow's table blocks are checksummed."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """TensorFlow/LevelDB's masked CRC: rotate right by 15 bits and add a constant."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """A base-128 varint at `pos`: (value, position after it)."""
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def snappy_decompress(data: bytes) -> bytes:
    """Decode a raw Snappy block (table blocks may be Snappy-compressed)."""
    expected, pos = read_varint(data, 0)
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                length = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            length += 1
            if pos + length > len(data):
                raise ValueError("snappy literal runs past the input")
            out += data[pos : pos + length]
            pos += length
            continue
        if kind == 1:
            length = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:
            length = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + 2], "little")
            pos += 2
        else:
            length = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        if offset == 0 or offset > len(out):
            raise ValueError("snappy copy offset out of range")
        start = len(out) - offset
        for i in range(length):  # copies may overlap their own output
            out.append(out[start + i])
    if len(out) != expected:
        raise ValueError(f"snappy block decodes to {len(out)} bytes, header says {expected}")
    return bytes(out)


def _read_block(data: bytes, offset: int, size: int) -> bytes:
    """A table block's contents, its checksum verified and Snappy undone."""
    end = offset + size
    if end + BLOCK_TRAILER > len(data):
        raise ValueError("block runs past the end of the file")
    contents, kind = data[offset:end], data[end]
    (stored,) = struct.unpack("<I", data[end + 1 : end + 5])
    if mask_crc(crc32c(data[offset : end + 1])) != stored:
        raise ValueError(f"block at {offset}: checksum mismatch")
    if kind == 0:
        return contents
    if kind == 1:
        return snappy_decompress(contents)
    raise ValueError(f"block at {offset}: unknown compression type {kind}")


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The (key, value) entries of a block: prefix-compressed keys, then restart points."""
    if len(block) < 4:
        raise ValueError("block too short")
    (restarts,) = struct.unpack("<I", block[-4:])
    limit = len(block) - 4 - 4 * restarts
    if limit < 0:
        raise ValueError("bad restart count")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = read_varint(block, pos)
        unshared, pos = read_varint(block, pos)
        value_len, pos = read_varint(block, pos)
        if shared > len(key) or pos + unshared + value_len > limit:
            raise ValueError("corrupt block entry")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_len]
        pos += value_len


def read_table(data: bytes) -> dict[bytes, bytes]:
    """Every (key, value) of a TensorFlow table file (LevelDB SSTable format)."""
    if len(data) < FOOTER_SIZE:
        raise ValueError("file too short for a table footer")
    footer = data[-FOOTER_SIZE:]
    (magic,) = struct.unpack("<Q", footer[-8:])
    if magic != TABLE_MAGIC:
        raise ValueError("not a TensorFlow table (bad magic number)")
    _meta_offset, pos = read_varint(footer, 0)
    _meta_size, pos = read_varint(footer, pos)
    index_offset, pos = read_varint(footer, pos)
    index_size, pos = read_varint(footer, pos)
    entries: dict[bytes, bytes] = {}
    for _, handle in _block_entries(_read_block(data, index_offset, index_size)):
        offset, p = read_varint(handle, 0)
        size, _ = read_varint(handle, p)
        entries.update(_block_entries(_read_block(data, offset, size)))
    return entries


def parse_proto(data: bytes) -> dict[int, list]:
    """A protobuf message as {field number: [values]} (varints as ints, others as bytes)."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = read_varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = read_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated protobuf message")
        fields.setdefault(number, []).append(value)
    return fields


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lies in a TensorFlow checkpoint (a BundleEntryProto)."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int


def _bundle_entry(name: str, value: bytes) -> BundleEntry:
    msg = parse_proto(value)
    if msg.get(7):
        raise ValueError(f"tensor {name} is stored in slices (partitioned), not supported")
    code = msg.get(1, [0])[-1]
    if code not in TF_DTYPES:
        raise ValueError(f"tensor {name} has TensorFlow dtype {code}, not a float type")
    shape_msg = parse_proto(msg.get(2, [b""])[-1])
    shape = tuple(parse_proto(dim).get(1, [0])[-1] for dim in shape_msg.get(2, []))
    return BundleEntry(
        dtype=TF_DTYPES[code],
        shape=shape,
        shard=msg.get(3, [0])[-1],
        offset=msg.get(4, [0])[-1],
        size=msg.get(5, [0])[-1],
    )


def read_bundle_index(index: Path) -> tuple[int, dict[str, BundleEntry]]:
    """A checkpoint's `.index` file: (number of data shards, {tensor name: entry})."""
    try:
        table = read_table(index.read_bytes())
        header = parse_proto(table.pop(b"", b""))
        if header.get(2, [0])[-1] != 0:
            raise ValueError("big-endian checkpoints are not supported")
        shards = header.get(1, [1])[-1]
        entries = {k.decode("utf-8"): _bundle_entry(k.decode("utf-8"), v) for k, v in table.items()}
    except FileNotFoundError:
        raise BadInput(f"{index}: not found") from None
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        raise BadInput(f"{index}: not a readable TensorFlow checkpoint index ({exc})") from None
    return shards, entries
