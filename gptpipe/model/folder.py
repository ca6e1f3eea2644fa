"""The one way to save and load a model: a folder with `model.safetensors` + `config.json`.

The folder also carries its tokenizer (`tokenizer.tiktoken` + `tokenizer.json`), so any
command rebuilds and uses the model from the folder alone, without params.yaml.
Nothing here unpickles anything.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tiktoken
import torch
from safetensors.torch import save_file

from gptpipe.errors import BadInput
from gptpipe.fsutil import atomic_dir, read_json
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.model.tensors import (
    LazyTensor,
    lazy_tensors,
    without_tied,
    write_safetensors,
)
from gptpipe.runtime import resolve_device
from gptpipe.tokenizer.folder import load_tokenizer

FORMAT = "gptpipe"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER_FILES = ("tokenizer.tiktoken", "tokenizer.json")


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
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(out_dir) as tmp:
        save_file(without_tied(state), str(tmp / WEIGHTS), metadata={"format": "pt"})
        _write_config_and_tokenizer(tmp, model.config, Path(tokenizer_dir), labels, meta)


def _write_config_and_tokenizer(
    tmp: Path,
    config: GPTConfig,
    tokenizer_dir: Path,
    labels: list[str] | None,
    meta: dict[str, Any] | None,
) -> None:
    """The rest of a model folder beside its weights: config.json and the tokenizer files."""
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
    }
    (tmp / CONFIG).write_text(json.dumps(config_json, indent=2) + "\n", encoding="utf-8")


def read_info(model_dir: Path | str) -> ModelInfo:
    """Read and check a model folder's config.json."""
    model_dir = Path(model_dir)
    path = model_dir / CONFIG
    if not path.is_file():
        raise BadInput(f"{path}: not found (is {model_dir} a model folder?)")
    raw = read_json(path)
    try:
        known = {f.name for f in fields(GPTConfig)}
        config = GPTConfig(**{k: v for k, v in raw["model"].items() if k in known})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
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
    tensors = without_tied(lazy_tensors(weights))
    try:
        model = model_from_tensors(info.config, tensors, weights)
    except BadInput as exc:
        raise BadInput(f"{exc} (config.json and model.safetensors do not match)") from None
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
    labels: list[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> None:
    """Write a model folder (the layout of `save_model`) from lazy tensors, streaming."""
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
    if isinstance(device, str):
        try:
            device = resolve_device(device)
        except RuntimeError:
            raise BadInput(f"device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    require_language_model(model_dir, read_info(model_dir))
    model, _ = load_model(model_dir, device)
    return model, load_tokenizer(model_dir)


def is_instruct(model_dir: Path, info: ModelInfo) -> bool:
    """An instruction-tuned model (its config says stage `instruct`, or its folder's name)."""
    return info.meta.get("stage") == "instruct" or model_dir.name == "instruct"
