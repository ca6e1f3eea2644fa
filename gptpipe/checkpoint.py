"""The one way to save and load a model: a folder with `model.safetensors` + `config.json`.

The folder also carries its tokenizer (`tokenizer.tiktoken` + `tokenizer.json`), so any
command rebuilds and uses the model from the folder alone, without params.yaml.
Nothing here unpickles anything.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gptpipe.errors import BadInput
from gptpipe.fsutil import atomic_dir
from gptpipe.model import GPT, GPTConfig

FORMAT = "gptpipe"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER_FILES = ("tokenizer.tiktoken", "tokenizer.json")
TIED = "lm_head.weight"


@dataclass(frozen=True)
class LazyTensor:
    """A tensor known by shape, read (and converted to our layout, float32) on demand."""

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
    header.pop("__metadata__", None)
    return header


@dataclass
class ModelInfo:
    """What config.json says besides the architecture."""

    config: GPTConfig
    labels: list[str] = field(default_factory=list)  # class names, for classifiers
    meta: dict[str, Any] = field(default_factory=dict)  # provenance: stage, steps, losses


def save_model(
    out_dir: Path | str,
    model: GPT,
    tokenizer_dir: Path | str,
    labels: list[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> None:
    """Write the model folder atomically (replacing any previous one)."""
    tokenizer_dir = Path(tokenizer_dir)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if model.config.n_classes == 0:
        state.pop(TIED, None)  # the head is wte, stored once
    with atomic_dir(out_dir) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        config = {
            "format": FORMAT,
            "model": model.config.to_dict(),
            "labels": list(labels or []),
            "meta": meta or {},
        }
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        for name in TOKENIZER_FILES:
            src = tokenizer_dir / name
            if not src.is_file():
                raise BadInput(f"{src}: tokenizer file not found")
            shutil.copyfile(src, tmp / name)


def read_info(model_dir: Path | str) -> ModelInfo:
    """Read and check a model folder's config.json."""
    model_dir = Path(model_dir)
    path = model_dir / CONFIG
    if not path.is_file():
        raise BadInput(f"{path}: not found (is {model_dir} a model folder?)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in fields(GPTConfig)}
        config = GPTConfig(**{k: v for k, v in raw["model"].items() if k in known})
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"{path}: not a gptpipe model config ({exc})") from None
    return ModelInfo(config=config, labels=list(raw.get("labels", [])), meta=raw.get("meta", {}))


def load_model(model_dir: Path | str, device: torch.device | str = "cpu") -> tuple[GPT, ModelInfo]:
    """Rebuild the model from its folder, in eval mode, on `device`.

    Tensors are read one at a time straight into the model's parameters (no random
    initialisation, no second copy), so peak memory stays about the size of the weights.
    """
    model_dir = Path(model_dir)
    info = read_info(model_dir)
    weights = model_dir / WEIGHTS
    if not weights.is_file():
        raise BadInput(f"{weights}: not found")
    tensors = {k: v for k, v in lazy_tensors(weights).items() if k != TIED}
    try:
        model = model_from_tensors(info.config, tensors, weights)
    except BadInput as exc:
        raise BadInput(f"{exc} (config.json and model.safetensors do not match)") from None
    return model.to(device).eval(), info


def with_classifier(model: GPT, n_classes: int) -> GPT:
    """A classifier sharing `model`'s transformer weights, with a fresh `score` head."""
    config = GPTConfig(**{**model.config.to_dict(), "n_classes": n_classes})
    classifier = GPT(config)
    state = {k: v for k, v in model.state_dict().items() if k != TIED}
    missing, _ = classifier.load_state_dict(state, strict=False)
    assert set(missing) <= {"score.weight", "score.bias"}, missing
    return classifier.to(next(model.parameters()).device)


def copy_model(src: Path | str, dst: Path | str) -> None:
    """Copy a model folder atomically (after checking it loads)."""
    read_info(src)
    with atomic_dir(dst) as tmp:
        for item in Path(src).iterdir():
            if item.is_file():
                shutil.copyfile(item, tmp / item.name)


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
                fh.write(memoryview(value.numpy()).cast("B"))
            del value


def save_tensors(
    out_dir: Path | str,
    config: GPTConfig,
    tensors: Mapping[str, LazyTensor],
    tokenizer_dir: Path | str,
    labels: list[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> None:
    """Write a model folder (the layout of `save_model`) from lazy tensors, streaming."""
    tokenizer_dir = Path(tokenizer_dir)
    with atomic_dir(out_dir) as tmp:
        for name in TOKENIZER_FILES:
            src = tokenizer_dir / name
            if not src.is_file():
                raise BadInput(f"{src}: tokenizer file not found")
            shutil.copyfile(src, tmp / name)
        write_safetensors(tmp / WEIGHTS, tensors)
        config_json = {
            "format": FORMAT,
            "model": config.to_dict(),
            "labels": list(labels or []),
            "meta": meta or {},
        }
        (tmp / CONFIG).write_text(json.dumps(config_json, indent=2) + "\n", encoding="utf-8")


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


def model_from_tensors(
    config: GPTConfig, tensors: Mapping[str, LazyTensor], where: Path | str = "weights"
) -> GPT:
    """Our model built around the given tensors (no random initialisation, no second copy).

    The module is created on the meta device (shapes only) and each loaded tensor becomes
    its parameter as is; the language-model head is then re-tied to `wte`.
    """
    with torch.device("meta"):
        model = GPT(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != TIED}
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    wrong = [k for k in expected if k in tensors and tuple(tensors[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        raise BadInput(
            f"{where}: weights do not match the config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shapes {wrong[:3]})"
        )
    state = {name: tensors[name].load() for name in expected}
    model.load_state_dict(state, strict=False, assign=True)
    if config.n_classes == 0:
        model.lm_head.weight = model.wte.weight
    return model.eval()
