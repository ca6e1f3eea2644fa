"""Training checkpoints: the resume state of a run (model, optimizer, RNG, loop state) in one
folder of safetensors + JSON, written atomically, resumed only by the same trajectory.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from gptpipe.config import TrainingConfig, to_dict
from gptpipe.errors import BadInput
from gptpipe.fsutil import atomic_dir, read_json

CHECKPOINT_VERSION = 1
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
# Settings that change nothing about the trajectory; a checkpoint stays valid across them.
NOT_FINGERPRINTED = ("device", "threads", "log_interval", "checkpoint_interval", "nproc")


def fingerprint(cfg: TrainingConfig, extra: dict[str, Any]) -> str:
    """Identifies a trajectory: the training settings that matter plus the task's `extra`
    (model architecture, data and tokenizer hashes). A checkpoint resumes only on a match."""
    settings = {k: v for k, v in to_dict(cfg).items() if k not in NOT_FINGERPRINTED}
    blob = json.dumps({"settings": settings, "extra": extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Atomically write model + optimizer tensors (safetensors) and the loop state (JSON);
    `extra_tensors` (such as the best weights of early stopping) go in under their names."""
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=False).items():
        if tensor.data_ptr() in seen:  # a tied weight: stored once, restored by the tie
            continue
        seen.add(tensor.data_ptr())
        tensors[f"model.{name}"] = tensor.detach().cpu().contiguous()
    for name, tensor in (extra_tensors or {}).items():
        tensors[name] = tensor.detach().cpu().contiguous()
    optim_state = optimizer.state_dict()
    for index, values in optim_state["state"].items():
        for key, value in values.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()}
        for group in optim_state["param_groups"]
    ]
    payload = {"version": CHECKPOINT_VERSION, **state, "param_groups": groups}
    with atomic_dir(directory) as tmp:
        save_file(tensors, str(tmp / STATE_TENSORS))
        (tmp / STATE_JSON).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def recover_checkpoint(directory: Path) -> None:
    """Finish a checkpoint replacement that a kill -9 cut short: `atomic_dir` renames the old
    folder aside before renaming the new one in; if the process died between the two, the old
    one (complete) is put back. Leftover temporary folders are removed. Only the training
    process calls this (never while another process may be writing)."""
    parent, name = directory.parent, directory.name
    if not parent.is_dir():
        return
    if not directory.exists():
        olds = sorted(parent.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime)
        if olds:
            olds[-1].rename(directory)
    for stale in [*parent.glob(f".{name}.old-*"), *parent.glob(f".{name}.*.tmp")]:
        shutil.rmtree(stale, ignore_errors=True)


def read_checkpoint_state(directory: Path) -> dict[str, Any] | None:
    """The JSON state of a checkpoint folder, or None when there is no usable one."""
    path = directory / STATE_JSON
    if not path.is_file() or not (directory / STATE_TENSORS).is_file():
        return None
    try:
        state = read_json(path)
    except BadInput:
        return None
    return state if isinstance(state, dict) and state.get("version") == CHECKPOINT_VERSION else None


def load_checkpoint(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """Restore model, optimizer and RNG state in place from a checkpoint folder; returns all
    its tensors (for the extra ones)."""
    tensors = load_file(str(directory / STATE_TENSORS))
    device = next(model.parameters()).device
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(model_state, strict=False)
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {
        n for n, _ in model.named_parameters()
    }
    if set(missing) - tied or unexpected:
        raise BadInput(f"{directory / STATE_TENSORS}: does not match the model")
    optim: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            optim.setdefault(int(index), {})[name] = value
    groups = [
        {k: (tuple(v) if k == "betas" else v) for k, v in group.items()}
        for group in state["param_groups"]
    ]
    optimizer.load_state_dict({"state": optim, "param_groups": groups})
    for values in optimizer.state.values():  # Adam's `step` stays where load put it
        for name, value in values.items():
            if name != "step":
                values[name] = value.to(device)
    torch.set_rng_state(tensors["rng.cpu"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    return tensors
