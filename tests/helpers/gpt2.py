"""Test helpers: small GPT-2 checkpoints in the foreign formats, written by the tests.

`write_tf_checkpoint` writes OpenAI's TensorFlow layout without TensorFlow: a data file
of raw little-endian tensors and an index that is a LevelDB-format table of
BundleEntryProto messages, encoded here independently of gptpipe.interop.tf_checkpoint's
reader (its own varint/protobuf encoders, block builder with restart points and key prefix
compression, optional Snappy compression), following tensorflow/core/lib/io/{format,block_builder,
table_builder}.cc and tensorflow/core/protobuf/tensor_bundle.proto.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import torch

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\nFirst Citizen:\nFirst, you know Caius Marcius is chief enemy "
    "to the people.\n\nAll:\nWe know't, we know't.\n\n"
) * 3


def hf_model(seed: int = 0, n_positions: int = 128, vocab_size: int = 50257):
    """A small random transformers GPT2LMHeadModel (the independent reference)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2, n_head=4, n_embd=64, vocab_size=vocab_size, n_positions=n_positions
    )
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # non-trivial LayerNorm parameters and biases, so all are tested
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


# ----------------------------------------------------------------------------- encoders


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_varint(field: int, value: int) -> bytes:
    return varint(field << 3) + varint(value)


def pb_bytes(field: int, value: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(value)) + value


def pb_fixed32(field: int, value: int) -> bytes:
    return varint(field << 3 | 5) + struct.pack("<I", value)


def crc32c_bitwise(data: bytes) -> int:
    """CRC-32C computed bit by bit (independent of the reader's table-driven version)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def snappy_compress(data: bytes) -> bytes:
    """A small greedy Snappy compressor: literals and 2-byte-offset copies of >= 4 bytes."""
    out = bytearray(varint(len(data)))
    seen: dict[bytes, int] = {}
    literal_start = i = 0

    def flush(end: int) -> None:
        chunk = data[literal_start:end]
        while chunk:
            piece, chunk = chunk[:60], chunk[60:]
            out.append((len(piece) - 1) << 2)
            out.extend(piece)

    while i + 4 <= len(data):
        key = data[i : i + 4]
        j = seen.get(key)
        seen[key] = i
        if j is not None and i - j < 65536:
            length = 4
            while i + length < len(data) and data[j + length] == data[i + length] and length < 64:
                length += 1
            flush(i)
            out.append(((length - 1) << 2) | 2)
            out.extend(struct.pack("<H", i - j))
            i += length
            literal_start = i
        else:
            i += 1
    flush(len(data))
    return bytes(out)


class BlockBuilder:
    """LevelDB block: prefix-compressed entries, a restart point every `interval` entries."""

    def __init__(self, interval: int = 16) -> None:
        self.buf = bytearray()
        self.restarts = [0]
        self.count = 0
        self.last = b""
        self.interval = interval

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count < self.interval:
            while shared < min(len(key), len(self.last)) and key[shared] == self.last[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buf))
            self.count = 0
        self.buf += varint(shared) + varint(len(key) - shared) + varint(len(value))
        self.buf += key[shared:] + value
        self.last = key
        self.count += 1

    def finish(self) -> bytes:
        tail = b"".join(struct.pack("<I", r) for r in self.restarts)
        return bytes(self.buf) + tail + struct.pack("<I", len(self.restarts))


def write_table(entries: list[tuple[bytes, bytes]], block_size: int, compress: bool) -> bytes:
    """A table file: data blocks, an empty metaindex block, an index block, the footer."""
    out = bytearray()

    def emit(contents: bytes) -> bytes:
        kind = 0
        if compress:
            contents, kind = snappy_compress(contents), 1
        handle = varint(len(out)) + varint(len(contents))
        trailer = bytes([kind])
        out.extend(
            contents + trailer + struct.pack("<I", masked(crc32c_bitwise(contents + trailer)))
        )
        return handle

    index = BlockBuilder(interval=1)
    block = BlockBuilder()
    for key, value in sorted(entries):
        block.add(key, value)
        if len(block.buf) >= block_size:
            index.add(key, emit(block.finish()))
            block = BlockBuilder()
    if block.count or not entries:
        index.add(block.last + b"\xff", emit(block.finish()))
    meta_handle = emit(BlockBuilder().finish())
    index_handle = emit(index.finish())
    footer = (meta_handle + index_handle).ljust(40, b"\0")
    footer += struct.pack("<II", 0x8B80FB57, 0xDB477524)
    return bytes(out + footer)


def tf_names(hf_name: str) -> str:
    """OpenAI's variable name for a Hugging Face GPT-2 tensor name."""
    name = hf_name.removeprefix("transformer.")
    parts = name.split(".")
    if parts[0] in ("wte", "wpe"):
        return f"model/{parts[0]}"
    if parts[0] == "h":
        parts = [f"h{parts[1]}", *parts[2:]]
    leaf = parts[-1]
    is_ln = any(p.startswith("ln_") for p in parts)
    parts[-1] = {"weight": "g" if is_ln else "w", "bias": "b"}[leaf]
    return "model/" + "/".join(parts)


def write_tf_checkpoint(
    folder: Path,
    hf_state: dict[str, torch.Tensor],
    hparams: dict,
    compress: bool = False,
    block_size: int = 512,
    dtype: torch.dtype = torch.float32,
    mutate: Callable[[dict], None] | None = None,
) -> None:
    """OpenAI's release layout from a Hugging Face GPT-2 state dict."""
    folder.mkdir(parents=True, exist_ok=True)
    codes = {torch.float32: 1, torch.float16: 19}
    tensors = {}
    for name, value in hf_state.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
            continue
        tf_name = tf_names(name)
        if tf_name.endswith("/w"):
            value = value.unsqueeze(0)  # Conv1D (in, out) -> (1, in, out)
        tensors[tf_name] = value.to(dtype).contiguous()
    data = bytearray()
    entries = []
    for tf_name in sorted(tensors):
        value = tensors[tf_name]
        raw = value.view(torch.uint8).numpy().tobytes() if value.numel() else b""
        shape = b"".join(pb_bytes(2, pb_varint(1, d)) for d in value.shape)
        entry = (
            pb_varint(1, codes[dtype])
            + pb_bytes(2, shape)
            + pb_varint(4, len(data))
            + pb_varint(5, len(raw))
            + pb_fixed32(6, 0)
        )
        entries.append((tf_name.encode(), entry))
        data += raw
    header = pb_varint(1, 1) + pb_bytes(3, pb_varint(1, 1))  # num_shards 1, version {producer 1}
    entries.append((b"", header))
    if mutate is not None:
        mutate(dict(entries))
    (folder / "model.ckpt.index").write_bytes(write_table(entries, block_size, compress))
    (folder / "model.ckpt.data-00000-of-00001").write_bytes(bytes(data))
    (folder / "hparams.json").write_text(json.dumps(hparams))


def converted(hf, n_head: int = 4):
    """Our GPT holding the weights of a transformers GPT2LMHeadModel (through gptpipe.interop)."""
    from gptpipe.interop.gpt2_formats import config_from_shapes, hf_to_ours
    from gptpipe.model.folder import model_from_tensors
    from gptpipe.model.tensors import LazyTensor

    ours = hf_to_ours(hf.state_dict())
    shapes = {k: tuple(v.shape) for k, v in ours.items()}
    config = config_from_shapes(shapes, n_head=n_head, where=Path("hf"))
    lazy = {k: LazyTensor(tuple(v.shape), lambda v=v: v.clone()) for k, v in ours.items()}
    return model_from_tensors(config, lazy)
