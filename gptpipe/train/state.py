"""The training state of a run and its training checkpoint (the resume state).

`TrainState` is the one resume schema: everything the loop needs to continue a run exactly
where it stopped, besides the model, optimizer and RNG tensors saved beside it. A training
checkpoint is one folder holding `state.json` (the dataclass's fields, the optimizer's
param groups and the trajectory's fingerprint) and `state.safetensors` (model, optimizer,
RNG and early stopping's best weights), written atomically, resumed only by the same
trajectory. Nothing here unpickles anything.

The format is the same whichever the strategy: under FSDP the tensors saved are the whole
ones (gathered from the shards, one at a time, by every rank; rank 0 writes), the optimizer's
state keyed by parameter index as `optimizer.state_dict()` numbers it, and a resume cuts each
rank's shard out of them again. So a checkpoint of a ddp run resumes under fsdp and back.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from gptpipe.config import TrainingConfig, to_dict
from gptpipe.errors import BadInput
from gptpipe.fsutil import atomic_dir, read_json
from gptpipe.model.tensors import without_tied
from gptpipe.outputs import folder_kind
from gptpipe.train.distributed import is_sharded, local, shard_like, whole, whole_state

CHECKPOINT_VERSION = 2  # 2: TrainState's flat fields (1 nested the early-stopping ones)
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
# A training checkpoint folder, as gptpipe.outputs recognises it (the run removes it at the end).
CHECKPOINT_FOLDER = folder_kind("training checkpoint folder", {STATE_JSON})
BEST_PREFIX = "best."  # early stopping's best weights, among the checkpoint's tensors
# Settings that change nothing about the trajectory; a checkpoint stays valid across them.
NOT_FINGERPRINTED = (
    *("device", "threads", "log_interval", "checkpoint_interval", "nproc"),
    "strategy",  # ddp and fsdp: the same trajectory, the same checkpoint format
)


class BrokenCheckpoint(Exception):
    """A training checkpoint that cannot be resumed: truncated, foreign, or not this model's."""


@dataclass
class TrainState:
    """Where a run stands after `step` optimizer steps: the one resume schema.

    Every field but `best_weights` is saved as JSON; `best_weights` (a copy of the model at
    the lowest val_loss, held only when the run keeps its best weights) is saved among the
    tensors.
    """

    step: int = 0  # optimizer steps done
    tokens: int = 0  # training tokens seen, over all ranks
    train_rows: list[dict[str, float]] = field(default_factory=list)  # train.csv so far
    val_rows: list[dict[str, float]] = field(default_factory=list)  # val.csv so far
    window_losses: list[float] = field(default_factory=list)  # step losses since a train row
    best_step: int = 0  # step of the lowest val_loss
    best_val_loss: float = math.inf
    bad_validations: int = 0  # validations since the lowest val_loss (early stopping)
    scaler: dict[str, Any] | None = None  # the float16 gradient scaler's state
    best_weights: dict[str, torch.Tensor] | None = None

    def log_window(self, lr: float, tokens_per_s: float, grad_norm: float) -> None:
        """Close the logging window: one train.csv row with the window's mean loss."""
        mean = sum(self.window_losses) / len(self.window_losses)
        self.train_rows.append(
            {"step": self.step, "train_loss": mean, "lr": lr}
            | {"tokens_per_s": tokens_per_s, "grad_norm": grad_norm}
        )
        self.window_losses = []

    def observe(
        self, metrics: dict[str, float], model: nn.Module, patience: int, keep_best: bool
    ) -> bool:
        """Record a validation at `step` (copying the weights of a new lowest val_loss when
        `keep_best`); True when early stopping says stop (`patience` validations in a row
        without a new lowest val_loss; 0: never)."""
        self.val_rows.append({"step": self.step, **{k: float(v) for k, v in metrics.items()}})
        if metrics["val_loss"] < self.best_val_loss:
            self.best_step, self.best_val_loss = self.step, float(metrics["val_loss"])
            self.bad_validations = 0
            if keep_best:
                self.best_weights = model_tensors(model)
            return False
        self.bad_validations += 1
        return 0 < patience <= self.bad_validations

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "best_weights"}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TrainState:
        names = [f.name for f in fields(cls) if f.name != "best_weights"]
        missing = [name for name in names if name not in raw]
        if missing:
            raise BrokenCheckpoint(f"{STATE_JSON} lacks {missing}")
        state = cls(**{name: raw[name] for name in names})
        try:
            state.step, state.tokens = int(state.step), int(state.tokens)
            state.window_losses = [float(v) for v in state.window_losses]
            rows_ok = all(isinstance(r, dict) for r in [*state.train_rows, *state.val_rows])
        except (TypeError, ValueError):
            rows_ok = False
        if not rows_ok:
            raise BrokenCheckpoint(f"{STATE_JSON}: malformed loop state")
        return state


def fingerprint(cfg: TrainingConfig, extra: dict[str, Any]) -> str:
    """Identifies a trajectory: the training settings that matter plus the task's `extra`
    (model architecture, data and tokenizer hashes). A checkpoint resumes only on a match."""
    settings = {k: v for k, v in to_dict(cfg).items() if k not in NOT_FINGERPRINTED}
    blob = json.dumps({"settings": settings, "extra": extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the model's state, the tied head left out (restored by the tie).
    Under FSDP the whole tensors, gathered on the host by every rank (a collective)."""
    if is_sharded(model):
        return whole_state(model)
    return {name: t.detach().clone() for name, t in without_tied(model.state_dict()).items()}


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    directory: Path,
    state: TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    key: str,
    *,
    write: bool = True,
) -> None:
    """Atomically write the training checkpoint of `state` (fingerprint `key`).

    Under FSDP every rank calls it (the shards are gathered, a collective) and only the one
    with `write` (rank 0) writes; unsharded, a call without `write` does nothing."""
    if not write and not is_sharded(model):
        return
    tensors: dict[str, torch.Tensor] = {}

    def add(name: str, tensor: torch.Tensor) -> None:
        """Gather one tensor (every rank, in the same order) and keep it on the host if
        this rank writes (so no rank ever holds a whole state on the device)."""
        gathered = whole(tensor.detach())
        if write:
            tensors[name] = gathered.cpu()

    for name, tensor in without_tied(model.state_dict()).items():
        add(f"model.{name}", tensor)
    optim_state = optimizer.state_dict()
    for index, values in optim_state["state"].items():
        for name, value in values.items():
            add(f"optim.{index}.{name}", torch.as_tensor(value))
    if not write:
        return
    for name, tensor in (state.best_weights or {}).items():
        tensors[BEST_PREFIX + name] = tensor
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()}
        for group in optim_state["param_groups"]
    ]
    payload = {"version": CHECKPOINT_VERSION, "fingerprint": key, **state.to_json()}
    payload["param_groups"] = groups
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
    """The JSON of a checkpoint folder (for inspection), or None when there is no usable one."""
    path = directory / STATE_JSON
    if not path.is_file() or not (directory / STATE_TENSORS).is_file():
        return None
    try:
        state = read_json(path)
    except BadInput:
        return None
    return state if isinstance(state, dict) and state.get("version") == CHECKPOINT_VERSION else None


def load_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    key: str,
    max_steps: int,
) -> TrainState | None:
    """The state of the checkpoint in `directory`, with model, optimizer and RNG restored in
    place from it; None (nothing touched) when there is none, or it is another trajectory's
    (fingerprint other than `key`), or it has nothing left to do (`max_steps` reached).

    Raises BrokenCheckpoint, before touching anything, when the folder is there but cannot be
    resumed: a missing or truncated file, another format version, tensors that do not fit.
    """
    if not directory.exists():
        return None
    try:
        raw = read_json(directory / STATE_JSON)
    except (BadInput, OSError) as exc:
        raise BrokenCheckpoint(str(exc).removeprefix(f"{directory}/")) from None
    try:
        tensors = load_file(str(directory / STATE_TENSORS))
    except (OSError, SafetensorError) as exc:
        raise BrokenCheckpoint(f"{STATE_TENSORS}: {exc}") from None
    if not isinstance(raw, dict) or raw.get("version") != CHECKPOINT_VERSION:
        version = raw.get("version") if isinstance(raw, dict) else None
        raise BrokenCheckpoint(f"format version {version!r}, not {CHECKPOINT_VERSION}")
    if raw.get("fingerprint") != key:
        return None
    state = TrainState.from_json(raw)
    if state.step >= max_steps:
        return None
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    best = {k[len(BEST_PREFIX) :]: v for k, v in tensors.items() if k.startswith(BEST_PREFIX)}
    optim = _optimizer_tensors(tensors)
    _check_fits(model, optimizer, model_state, best, optim, raw.get("param_groups"))
    if "rng.cpu" not in tensors:
        raise BrokenCheckpoint(f"{STATE_TENSORS} lacks the RNG state")

    device = next(model.parameters()).device
    sharded = is_sharded(model)
    _load_model(model, model_state, sharded)
    groups = [
        {k: (tuple(v) if k == "betas" else v) for k, v in group.items()}
        for group in raw["param_groups"]
    ]
    if sharded:  # each rank's shard of the whole moments, placed as its parameter's
        params = [p for group in optimizer.param_groups for p in group["params"]]
        optim = {
            i: {k: v if k == "step" else shard_like(v, params[i]) for k, v in values.items()}
            for i, values in optim.items()
        }
    optimizer.load_state_dict({"state": optim, "param_groups": groups})
    for values in optimizer.state.values():  # Adam's `step` stays where load put it
        for name, value in values.items():
            if name != "step":
                values[name] = value.to(device)
    torch.set_rng_state(tensors["rng.cpu"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    home = torch.device("cpu") if sharded else device  # under FSDP never whole on the device
    state.best_weights = {k: v.to(home) for k, v in best.items()} or None
    return state


def _load_model(model: nn.Module, tensors: dict[str, torch.Tensor], sharded: bool) -> None:
    """Load a checkpoint's whole tensors (the tied head left out) into `model`; under FSDP
    each rank copies its own shard of them in (no communication: every rank read them)."""
    if not sharded:
        model.load_state_dict(tensors, strict=False)
        return
    with torch.no_grad():
        for name, target in without_tied(model.state_dict()).items():
            part = shard_like(tensors[name].to(target.dtype), target)
            local(target).copy_(local(part))


def _optimizer_tensors(tensors: dict[str, torch.Tensor]) -> dict[int, dict[str, torch.Tensor]]:
    optim: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            optim.setdefault(int(index), {})[name] = value
    return optim


def _check_fits(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    model_state: dict[str, torch.Tensor],
    best: dict[str, torch.Tensor],
    optim: dict[int, dict[str, torch.Tensor]],
    groups: Any,
) -> None:
    """BrokenCheckpoint unless the saved tensors fit this model and optimizer exactly."""
    expected = {k: tuple(v.shape) for k, v in without_tied(model.state_dict()).items()}
    got = {k: tuple(v.shape) for k, v in model_state.items()}
    if got != expected:
        wrong = sorted(set(got) ^ set(expected)) or [k for k in got if got[k] != expected[k]]
        raise BrokenCheckpoint(f"{STATE_TENSORS} does not match the model ({wrong[:3]})")
    if any(k not in expected or tuple(v.shape) != expected[k] for k, v in best.items()):
        raise BrokenCheckpoint(f"{STATE_TENSORS}: the best weights do not match the model")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    if not isinstance(groups, list) or [len(g.get("params", [])) for g in groups] != sizes:
        raise BrokenCheckpoint(f"{STATE_JSON}: the optimizer's parameter groups do not match")
    for index, values in optim.items():
        shape = tuple(params[index].shape) if index < len(params) else None
        for name, value in values.items():
            if name != "step" and tuple(value.shape) != shape:
                raise BrokenCheckpoint(f"{STATE_TENSORS}: optimizer state {index}.{name}")


def open_training_checkpoint(
    directory: Path,
    load: Callable[[Path], TrainState | None],
    say: Callable[[str], object],
) -> TrainState | None:
    """Recover `directory` after a kill, then `load` it (None: nothing to resume).

    A broken checkpoint is reported in one line and renamed aside (`<name>.broken-<time>`,
    kept for a post-mortem) so that no rerun fails on it again; the run then goes on from
    the previous checkpoint if a cut-short replacement left one, else from scratch, and the
    line says which.
    """
    parent, name = directory.parent, directory.name
    if not directory.exists():
        recover_checkpoint(directory)  # a replacement cut short: the old one is put back
    if not directory.exists():
        return None
    previous = sorted(parent.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime)
    candidates = [directory, *reversed(previous)]
    for i, candidate in enumerate(candidates):
        try:
            state = load(candidate)
        except BrokenCheckpoint as exc:
            aside = parent / f"{name}.broken-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{i}"
            candidate.rename(aside)
            then = "trying the previous one" if i + 1 < len(candidates) else "starting fresh"
            say(f"checkpoint {directory} is unusable ({exc}); moved to {aside}; {then}")
            continue
        if candidate != directory:
            candidate.rename(directory)
            say(f"resuming the previous checkpoint {directory}")
        recover_checkpoint(directory)  # remove the other leftovers
        return state
    recover_checkpoint(directory)
    return None
