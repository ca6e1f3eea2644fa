"""The one way to save and load a model: a folder with `model.safetensors` + `config.json`.

The folder also carries its tokenizer (`tokenizer.tiktoken` + `tokenizer.json`), so any
command rebuilds and uses the model from the folder alone, without params.yaml.
Nothing here unpickles anything.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gptpipe.errors import BadInput
from gptpipe.fsutil import atomic_dir
from gptpipe.model import GPT, GPTConfig

FORMAT = "gptpipe"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER_FILES = ("tokenizer.tiktoken", "tokenizer.json")
TIED = "lm_head.weight"


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
    """Rebuild the model from its folder, in eval mode, on `device`."""
    model_dir = Path(model_dir)
    info = read_info(model_dir)
    weights = model_dir / WEIGHTS
    if not weights.is_file():
        raise BadInput(f"{weights}: not found")
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise BadInput(f"{weights}: cannot read weights ({exc})") from None
    model = GPT(info.config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != TIED]
    if missing or unexpected:
        raise BadInput(
            f"{weights}: weights do not match config.json "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
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
