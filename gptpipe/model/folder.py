"""The one way to save and load a model: a folder with `model.safetensors` + `config.json`.

The folder also carries its tokenizer (`tokenizer.tiktoken` + `tokenizer.json`), so any
command rebuilds and uses the model from the folder alone, without params.yaml.
Nothing here unpickles anything.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tiktoken
import torch
from safetensors.torch import save_file

from gptpipe.config import MODEL_LIMITS, gpt_params, require_fits
from gptpipe.errors import BadInput
from gptpipe.fsutil import atomic_dir, files_sha256, read_json
from gptpipe.model.gpt import GELUS, GPT, GPTConfig
from gptpipe.model.skipped import MARKER as SKIPPED_MARKER
from gptpipe.model.tensors import (
    LazyTensor,
    lazy_tensors,
    without_tied,
    write_safetensors,
)
from gptpipe.outputs import folder_kind
from gptpipe.runtime import resolve_device
from gptpipe.tokenizer.folder import load_tokenizer

FORMAT = "gptpipe"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER_FILES = ("tokenizer.tiktoken", "tokenizer.json")
# What a model folder holds (or, where pretraining was skipped, its marker): an output may
# replace such a folder (gptpipe.outputs).
MODEL_FOLDER = folder_kind("model folder", {WEIGHTS, CONFIG}, {SKIPPED_MARKER})


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
    *,
    labels: list[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> None:
    """Write the model folder atomically (replacing any previous one). A classifier names
    its `labels`, one per class; a language model has none."""
    _check_labels(model.config, labels)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(out_dir) as tmp:
        save_file(without_tied(state), str(tmp / WEIGHTS), metadata={"format": "pt"})
        _write_config_and_tokenizer(tmp, model.config, Path(tokenizer_dir), labels, meta)


def _check_labels(config: GPTConfig, labels: list[str] | None) -> None:
    """A classifier names its classes (or none of them); a language model has none."""
    if len(labels or []) not in (0, config.n_classes):
        raise ValueError(
            f"labels: {len(labels or [])} class names for a model with "
            f"{config.n_classes} classes (model.n_classes)"
        )


def _write_config_and_tokenizer(
    tmp: Path,
    config: GPTConfig,
    tokenizer_dir: Path,
    labels: list[str] | None,
    meta: dict[str, Any] | None,
) -> None:
    """The rest of a model folder beside its weights (already in `tmp`): config.json, with
    the weights' digest, and the tokenizer files."""
    for name in TOKENIZER_FILES:
        src = tokenizer_dir / name
        if not src.is_file():
            raise BadInput(f"{src}: tokenizer file not found")
        shutil.copyfile(src, tmp / name)
    config_json = {
        "format": FORMAT,
        "model": config.to_dict(),
        "labels": list(labels or []),
        "meta": meta or {},
        DIGEST: weights_digest(tmp / WEIGHTS),
    }
    (tmp / CONFIG).write_text(json.dumps(config_json, indent=2) + "\n", encoding="utf-8")


def read_info(model_dir: Path | str) -> ModelInfo:
    """Read and check a model folder's config.json."""
    model_dir = Path(model_dir)
    path = model_dir / CONFIG
    if not path.is_file():
        raise BadInput(f"{path}: not found (is {model_dir} a model folder?)")
    raw = read_json(path)
    config, labels, meta = check_config(raw, path)
    return ModelInfo(config=config, labels=labels, meta=meta)


# --------------------------------------------------------------------------- checks

DIGEST = "weights_sha256"  # config.json key: sha256 of model.safetensors, verified on load
_INT_KEYS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")
_VOCAB_LIMIT = 10_000_000


def check_config(raw: Any, path: Path) -> tuple[GPTConfig, list[str], dict[str, Any]]:
    """A model folder's config.json checked as strictly as params.yaml: types, ranges,
    shapes and a size that fits in memory; every error names the file and the key."""

    def bad(key: str, message: str) -> BadInput:
        return BadInput(f"{path}: key '{key}': {message}")

    if not isinstance(raw, dict):
        raise BadInput(f"{path}: not a gptpipe model config (expected a JSON object)")
    model = raw.get("model")
    if model is None:
        raise BadInput(f"{path}: not a gptpipe model config (no 'model' key)")
    if not isinstance(model, dict):
        raise bad("model", f"expected a mapping, got {type(model).__name__}")
    values: dict[str, Any] = {}
    for key in (*_INT_KEYS, "n_classes"):
        if key not in model:
            if key == "n_classes":
                continue
            raise bad(f"model.{key}", "missing")
        value = model[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(f"model.{key}", f"expected an integer, got {value!r}")
        low = 0 if key == "n_classes" else 1
        if value < low:
            raise bad(f"model.{key}", f"must be >= {low}, not {value}")
        values[key] = value
    for key, limit in (*MODEL_LIMITS.items(), ("vocab_size", _VOCAB_LIMIT)):
        if values[key] > limit:
            raise bad(f"model.{key}", f"must be <= {limit:,}, not {values[key]:,}")
    if values["n_embd"] % values["n_head"]:
        raise bad("model.n_embd", f"must be divisible by model.n_head ({values['n_head']})")
    if "dropout" in model:
        dropout = model["dropout"]
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise bad("model.dropout", f"expected a number, got {dropout!r}")
        if not 0 <= dropout < 1:
            raise bad("model.dropout", f"must be in [0, 1), not {dropout}")
        values["dropout"] = float(dropout)
    if "bias" in model:
        if not isinstance(model["bias"], bool):
            raise bad("model.bias", f"expected true or false, got {model['bias']!r}")
        values["bias"] = model["bias"]
    if "gelu" in model:  # absent from folders written before the option: GPT-2's tanh
        if model["gelu"] not in GELUS:
            raise bad("model.gelu", f"expected one of {', '.join(GELUS)}, got {model['gelu']!r}")
        values["gelu"] = model["gelu"]
    config = GPTConfig(**values)
    weights = 4 * gpt_params(config, config.vocab_size)
    try:
        require_fits("model", weights, "its float32 weights")
    except BadInput as exc:
        raise BadInput(f"{path}: {str(exc).removeprefix('params key ')}") from None
    labels = raw.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise bad("labels", f"expected a list of class names (strings), got {labels!r}")
    if len(labels) not in (0, config.n_classes):
        raise bad("labels", f"names {len(labels)} classes, model.n_classes is {config.n_classes}")
    meta = raw.get("meta", {})
    if not isinstance(meta, dict):
        raise bad("meta", f"expected a mapping, got {type(meta).__name__}")
    digest = raw.get(DIGEST)
    if digest is not None and not (isinstance(digest, str) and len(digest) == 64):
        raise bad(DIGEST, "expected the sha256 hex digest of model.safetensors")
    return config, list(labels), meta


def weights_digest(path: Path | str) -> str:
    """sha256 (hex) of a weights file, read in 1 MiB blocks (hashing runs at GB/s)."""
    return files_sha256(Path(path))


def verify_weights(model_dir: Path) -> None:
    """A weights file whose bytes differ from the digest config.json records is bad input
    (a flipped bit or a truncated copy). Folders saved before digests were recorded load
    without the check."""
    raw = read_json(model_dir / CONFIG)
    expected = raw.get(DIGEST) if isinstance(raw, dict) else None
    if expected is None:
        return
    weights = model_dir / WEIGHTS
    if weights_digest(weights) != expected:
        raise BadInput(
            f"{weights}: corrupt (sha256 differs from {DIGEST} in {model_dir / CONFIG}); "
            "copy or rebuild the model"
        )


def check_finite(model: GPT, where: Path) -> None:
    """NaN or infinite weights make every output NaN: refuse them when loading."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise BadInput(f"{where}: tensor {name} holds NaN or infinite values")


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
    verify_weights(model_dir)
    tensors = without_tied(lazy_tensors(weights))
    try:
        model = model_from_tensors(info.config, tensors, weights)
    except BadInput as exc:
        raise BadInput(f"{exc} (config.json and model.safetensors do not match)") from None
    check_finite(model, weights)
    return model.to(device).eval(), info


def copy_model(src: Path | str, dst: Path | str) -> None:
    """Copy a model folder atomically (after checking it loads)."""
    read_info(src)
    with atomic_dir(dst) as tmp:
        for item in Path(src).iterdir():
            if item.is_file():
                shutil.copyfile(item, tmp / item.name)


def save_tensors(
    out_dir: Path | str,
    config: GPTConfig,
    tensors: Mapping[str, LazyTensor],
    tokenizer_dir: Path | str,
    *,
    labels: list[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> None:
    """Write a model folder (what `save_model` writes) from lazy tensors, streaming."""
    _check_labels(config, labels)
    with atomic_dir(out_dir) as tmp:
        write_safetensors(tmp / WEIGHTS, tensors)
        _write_config_and_tokenizer(tmp, config, Path(tokenizer_dir), labels, meta)


def model_from_tensors(
    config: GPTConfig, tensors: Mapping[str, LazyTensor], where: Path | str = "weights"
) -> GPT:
    """Our model built around the given tensors (no random initialisation, no second copy).

    The module is created on the meta device (shapes only) and each loaded tensor becomes
    its parameter as is; the language-model head is then re-tied to `wte`.
    """
    with torch.device("meta"):
        model = GPT(config)
    expected = {k: tuple(v.shape) for k, v in without_tied(model.state_dict()).items()}
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
        model.lm_head.weight = model.wte.weight  # the tied head, re-tied
    return model.eval()


def require_language_model(model_dir: Path | str, info: ModelInfo, why: str = "") -> None:
    """The one check that a model folder holds a language model, not a classifier."""
    if info.config.n_classes > 0:
        classes = f"{info.config.n_classes} classes: {', '.join(info.labels)}"
        raise BadInput(
            f"{model_dir}: is a classifier ({classes}), not a language model" + (why and f"; {why}")
        )


def load_language_model(
    model_dir: Path | str, device: torch.device | str = "cpu"
) -> tuple[GPT, tiktoken.Encoding]:
    """A language model (in eval mode, on `device`: a torch.device, or auto, cpu, cuda or
    cuda:N) and its tokenizer, from a model folder; a classifier is bad input. Every command
    that generates, samples, evaluates or fine-tunes loads its model with this."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise BadInput(f"{model_dir}: model folder not found")
    if isinstance(device, str):  # a command's --device option
        device = resolve_device(device, "--device")
    require_language_model(model_dir, read_info(model_dir))
    model, _ = load_model(model_dir, device)
    return model, load_tokenizer(model_dir)


def is_instruct(model_dir: Path, info: ModelInfo) -> bool:
    """An instruction-tuned model (its config says stage `instruct`, or its folder's name)."""
    return info.meta.get("stage") == "instruct" or model_dir.name == "instruct"
