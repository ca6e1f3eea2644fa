"""The one training loop, shared by pretraining and both fine-tunings.

A task plugs in three callables (composition, no subclassing):

- `batch_at(i)`: the i-th micro-batch (a tuple of CPU tensors). It depends on `i` only, so a
  run is reproducible and resumes exactly from a checkpoint without any iterator state.
  Step `s` (0-based) uses micro-batches `s * grad_accum ... s * grad_accum + grad_accum - 1`.
- `loss_of(model, batch)`: the scalar loss of one micro-batch (already on the device).
- `validate(model)`: validation metrics, at least `val_loss` (run in eval mode, no grad).

The loop owns the rest: AdamW with weight decay on matrices only, linear warm-up then cosine
decay to `min_lr`, gradient accumulation and clipping, bf16 autocast, periodic validation,
curves as CSV (`train.csv`, `val.csv`), a live progress line, a clear error on a
non-finite loss, and resumable checkpoints (periodic, and on Ctrl-C / SIGTERM).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
from rich.progress import TextColumn
from safetensors.torch import load_file, save_file
from torch import nn

from gptpipe.config import TrainingConfig, to_dict
from gptpipe.errors import BadInput
from gptpipe.fsutil import atomic_dir, read_json, write_text
from gptpipe.progress import console, progress
from gptpipe.runtime import resolve_device, resolve_dtype

Batch = Sequence[torch.Tensor]
BatchAt = Callable[[int], Batch]
LossOf = Callable[[nn.Module, Batch], torch.Tensor]
Validate = Callable[[nn.Module], dict[str, float]]

CHECKPOINT_VERSION = 1
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
# Settings that change nothing about the trajectory; a checkpoint stays valid across them.
NOT_FINGERPRINTED = ("device", "threads", "log_interval", "checkpoint_interval", "nproc")


class Diverged(BadInput):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass
class TrainResult:
    """What a finished run reports; `val` is the last validation's metrics."""

    steps: int  # optimizer steps done (< max_steps after an early stop)
    tokens: int
    train_loss: float  # mean training loss over the last logging window
    val: dict[str, float]
    best_step: int  # step of the lowest val_loss
    best_val_loss: float
    tokens_per_s: float  # training throughput of this session (validation excluded)
    seconds: float  # wall time of this session
    resumed_from: int = 0  # step a checkpoint was resumed from (0: fresh start)
    stopped_early: bool = False  # early stopping ended the run before max_steps
    train_rows: list[dict[str, float]] = field(default_factory=list)
    val_rows: list[dict[str, float]] = field(default_factory=list)

    def metrics(self, perplexity: bool = True) -> dict[str, Any]:
        """The metrics every training stage reports, under the same DVC metrics keys:
        losses (with the perplexity of the validation loss for language models), the best
        validation, and how much and how fast it trained."""
        val_loss = self.val["val_loss"]
        summary: dict[str, Any] = {"train_loss": self.train_loss, "val_loss": val_loss}
        if perplexity:
            summary["val_perplexity"] = math.exp(min(val_loss, 700.0))
        return summary | {
            "best_step": self.best_step,
            "best_val_loss": self.best_val_loss,
            "steps": self.steps,
            "tokens": self.tokens,
            "tokens_per_s": self.tokens_per_s,
            "seconds": self.seconds,
        }


# --------------------------------------------------------------------------- pieces


def training_device(cfg: TrainingConfig) -> torch.device:
    """The device named by `cfg.device`; asking for CUDA without one is bad input."""
    device = resolve_device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"params key '{cfg._section()}.device': {cfg.device!r} but no CUDA device")
    return device


def lr_at(step: int, cfg: TrainingConfig) -> float:
    """Learning rate of 0-based `step`: linear warm-up to the peak over `warmup_steps`
    steps, then cosine decay reaching `min_lr` exactly at the last step."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_steps + 1)
    decay_steps = max(1, cfg.max_steps - 1 - cfg.warmup_steps)
    ratio = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: matrices and embeddings (>= 2-D) decay; biases and norms do not.
    A tied weight appears once (named_parameters deduplicates)."""
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.AdamW:
    """AdamW; the fused kernel on CUDA, the plain per-parameter loop on the CPU."""
    cuda = next(model.parameters()).device.type == "cuda"
    options: dict[str, Any] = {"fused": True} if cuda else {"foreach": False}
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=lr_at(0, cfg),
        betas=(cfg.beta1, cfg.beta2),
        **options,
    )


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast to bfloat16 or float16 (CPU and CUDA; `auto` as resolve_dtype says); nothing
    for float32."""
    dtype = resolve_dtype(dtype, device)
    if dtype in ("bfloat16", "float16"):
        return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))
    return contextlib.nullcontext()


@contextlib.contextmanager
def evaluating(model: nn.Module, dtype: str) -> Iterator[None]:
    """Eval mode, no grad and the run's autocast; the previous mode is restored after."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad(), autocast(device, dtype):
            yield
    finally:
        model.train(was_training)


def to_device(batch: Batch, device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(device, non_blocking=True) for t in batch)


def fingerprint(cfg: TrainingConfig, extra: dict[str, Any]) -> str:
    """Identifies a trajectory: the training settings that matter plus the task's `extra`
    (model architecture, data and tokenizer hashes). A checkpoint resumes only on a match."""
    settings = {k: v for k, v in to_dict(cfg).items() if k not in NOT_FINGERPRINTED}
    blob = json.dumps({"settings": settings, "extra": extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def file_digest(*paths: Path) -> str:
    """sha256 over the bytes of files (for `checkpoint_key`: data and base weights)."""
    digest = hashlib.sha256()
    for path in paths:
        with Path(path).open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    """Write curve rows as CSV (atomically); columns from the first row, `step` first."""
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


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


@contextlib.contextmanager
def stop_requests() -> Iterator[Callable[[], bool]]:
    """While active, SIGINT and SIGTERM ask the loop to stop at the next step boundary (so a
    checkpoint holds a consistent state); a second signal interrupts at once."""
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(requested)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --------------------------------------------------------------------------- the loop


def world() -> tuple[int, int]:
    """(rank, world size) of this process in an initialised process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_mean(value: float, device: torch.device) -> float:
    """The mean of `value` over all ranks (the value itself when alone)."""
    if world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / world()[1]


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any (a stop request reaches one process)."""
    if world()[1] == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t)


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: TrainingConfig,
    lr: float,
    step: int,
    batch_at: BatchAt,
    loss_of: LossOf,
    *,
    net: nn.Module | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[float, int, float]:
    """One optimizer step over `grad_accum` micro-batches: returns (mean loss over all ranks,
    tokens over all ranks, gradient norm before clipping). A non-finite loss or gradient is
    Diverged (except a float16 overflow, which the gradient scaler skips and backs off from).

    `net` is what the forward passes go through (the model wrapped by DistributedDataParallel
    and/or torch.compile; default: `model`); the optimizer and clipping see `model`'s
    parameters. Under DDP the gradients are all-reduced on the last micro-batch only.
    """
    net = net if net is not None else model
    device = next(model.parameters()).device
    dtype = resolve_dtype(cfg.dtype, device)
    hint = f"lower {cfg._section()}.learning_rate or check the data"
    for group in optimizer.param_groups:
        group["lr"] = lr
    step_loss, step_tokens = 0.0, 0
    for micro in range(cfg.grad_accum):
        batch = to_device(batch_at(step * cfg.grad_accum + micro), device)
        last = micro == cfg.grad_accum - 1
        sync = contextlib.nullcontext() if last or world()[1] == 1 else net.no_sync()
        with sync:
            with autocast(device, dtype):
                loss = loss_of(net, batch)
            scaled = loss / cfg.grad_accum
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        step_loss += float(loss.detach()) / cfg.grad_accum
        step_tokens += batch[0].numel()
    size = world()[1]
    step_loss = all_mean(step_loss, device)
    if not math.isfinite(step_loss):
        raise Diverged(f"training loss is {step_loss} at step {step + 1}; {hint}")
    if scaler is not None:
        scaler.unscale_(optimizer)
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf  # inf: measure, do not clip
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    if scaler is not None:
        scaler.step(optimizer)  # skipped when the unscaled gradients hold inf/NaN
        scaler.update()
    elif not math.isfinite(norm):
        raise Diverged(f"gradient norm is {norm} at step {step + 1}; {hint}")
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return step_loss, step_tokens * size, norm


def prepare(model: nn.Module, cfg: TrainingConfig) -> nn.Module:
    """What the forward passes go through: the model, in DistributedDataParallel when this
    process is one of several, compiled when `cfg.compile`. Turns TF32 matmuls on for CUDA
    (float32 accuracy of training is unaffected; 3-8x the matmul speed on Ampere and later)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    net = model
    if world()[1] > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    return net


def grad_scaler(cfg: TrainingConfig, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for float16 autocast (its small range underflows gradients without
    one: the classic NaN of fp16 training); bfloat16 and float32 need none."""
    if resolve_dtype(cfg.dtype, device) == "float16":
        return torch.amp.GradScaler(device.type)
    return None


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the model's state, a tied weight once (restored by the tie)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=False).items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        out[name] = tensor.detach().clone()
    return out


def train(
    model: nn.Module,
    cfg: TrainingConfig,
    *,
    batch_at: BatchAt,
    loss_of: LossOf,
    validate: Validate,
    plot_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
    checkpoint_key: dict[str, Any] | None = None,
    description: str = "train",
) -> TrainResult:
    """Train `model` in place for `cfg.max_steps` optimizer steps and return the result.

    The model must already be on its device and seeded; `batch_at` returns CPU tensors (this
    rank's slice under torchrun). With `checkpoint_dir`, a compatible checkpoint there is
    resumed (same `cfg` and `checkpoint_key`), one is saved every `cfg.checkpoint_interval`
    steps and on Ctrl-C or SIGTERM (then KeyboardInterrupt is raised), and it is removed once
    training finishes. With `cfg.patience`, training stops early after that many validations
    without a new lowest val_loss, and the model ends with the best weights.

    In a process group (torchrun), every rank runs this with the same arguments; gradients are
    averaged by DistributedDataParallel, the logged losses over the ranks, and only rank 0
    writes curves and checkpoints (all ranks read a checkpoint to resume: a shared folder).
    """
    device = next(model.parameters()).device
    rank, size = world()
    main = rank == 0
    dtype = resolve_dtype(cfg.dtype, device)
    optimizer = make_optimizer(model, cfg)
    scaler = grad_scaler(cfg, device)
    extra = dict(checkpoint_key or {}) | {"dtype": dtype}
    if size > 1:
        extra["world_size"] = size
    key = fingerprint(cfg, extra)
    train_rows: list[dict[str, float]] = []
    val_rows: list[dict[str, float]] = []
    window_losses: list[float] = []  # step losses since the last train.csv row
    start = 0
    tokens = 0
    best: dict[str, Any] = {"step": 0, "val_loss": math.inf, "bad": 0, "state": None}
    last_saved = 0
    say = console.print if main else (lambda *a, **k: None)
    if checkpoint_dir is not None:
        if main:
            recover_checkpoint(checkpoint_dir)
        if size > 1:
            dist.barrier()
        state = read_checkpoint_state(checkpoint_dir)
        if state is not None and state.get("fingerprint") == key and state["step"] < cfg.max_steps:
            tensors = load_checkpoint(checkpoint_dir, model, optimizer, state)
            start, tokens = int(state["step"]), int(state["tokens"])
            last_saved = start
            train_rows, val_rows = state["train_rows"], state["val_rows"]
            window_losses = [float(v) for v in state["window_losses"]]
            best |= {k: state["best"][k] for k in ("step", "val_loss", "bad")}
            saved_best = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
            best["state"] = saved_best or None
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            say(f"{description}: resuming from the checkpoint at step {start}")
        elif state is not None:
            say(f"{description}: ignoring the incompatible checkpoint in {checkpoint_dir}")

    def checkpoint(step: int) -> None:
        nonlocal last_saved
        if checkpoint_dir is not None and main:
            state = {"fingerprint": key, "step": step, "tokens": tokens}
            state |= {"train_rows": train_rows, "val_rows": val_rows}
            state["window_losses"] = window_losses
            state["best"] = {k: best[k] for k in ("step", "val_loss", "bad")}
            state["scaler"] = scaler.state_dict() if scaler is not None else None
            extra_tensors = {f"best.{k}": v for k, v in (best["state"] or {}).items()}
            save_checkpoint(checkpoint_dir, model, optimizer, state, extra_tensors)
        last_saved = step

    def run_validation(step: int) -> bool:
        """Validate; returns True when early stopping says stop."""
        with evaluating(model, dtype):
            metrics = validate(model)
        if "val_loss" not in metrics or not math.isfinite(metrics["val_loss"]):
            raise Diverged(f"validation loss at step {step} is {metrics.get('val_loss')}")
        val_rows.append({"step": step, **{k: float(v) for k, v in metrics.items()}})
        if plot_dir is not None and main:
            write_csv(plot_dir / "val.csv", val_rows)
        shown = "  ".join(f"{k} {float(v):.4f}" for k, v in metrics.items())
        say(f"{description}: step {step}/{cfg.max_steps}  {shown}")
        if metrics["val_loss"] < best["val_loss"]:
            best.update(step=step, val_loss=float(metrics["val_loss"]), bad=0)
            if cfg.patience > 0:
                best["state"] = model_tensors(model)
            return False
        best["bad"] += 1
        return 0 < cfg.patience <= best["bad"]

    def diverged(exc: Diverged) -> Diverged:
        if checkpoint_dir is None:
            kept = "no checkpoints were asked for"
        elif last_saved > 0:
            kept = f"the last good checkpoint (step {last_saved}) is kept in {checkpoint_dir}"
        else:
            kept = "no checkpoint had been written yet"
        return Diverged(f"{exc}; {kept}")

    net = prepare(model, cfg)
    started = time.perf_counter()
    train_seconds = 0.0
    session_tokens = 0
    window_tokens, window_seconds = 0, 0.0
    columns = (
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("lr {task.fields[lr]:.2e}"),
        TextColumn("{task.fields[tps]:,.0f} tok/s"),
    )
    model.train()
    done = start
    stopped_early = False
    bar = progress(*columns)
    bar.disable = not main
    with stop_requests() as stop_requested, bar:
        task = bar.add_task(
            description, total=cfg.max_steps, completed=start, loss=0.0, lr=0.0, tps=0
        )
        for step in range(start, cfg.max_steps):
            t0 = time.perf_counter()
            lr = lr_at(step, cfg)
            try:
                step_loss, step_tokens, norm = optimizer_step(
                    model, optimizer, cfg, lr, step, batch_at, loss_of, net=net, scaler=scaler
                )
            except Diverged as exc:
                raise diverged(exc) from None
            seconds = time.perf_counter() - t0
            train_seconds += seconds
            tokens += step_tokens
            session_tokens += step_tokens
            window_losses.append(step_loss)
            window_tokens += step_tokens
            window_seconds += seconds
            done = step + 1
            tps = window_tokens / max(window_seconds, 1e-9)
            bar.update(task, completed=done, loss=step_loss, lr=lr, tps=tps)
            if done % cfg.log_interval == 0 or done == cfg.max_steps:
                row = {"step": done, "train_loss": sum(window_losses) / len(window_losses)}
                row |= {"lr": lr, "tokens_per_s": tps, "grad_norm": norm}
                train_rows.append(row)
                if plot_dir is not None and main:
                    write_csv(plot_dir / "train.csv", train_rows)
                window_losses, window_tokens, window_seconds = [], 0, 0.0
            if done % cfg.eval_interval == 0 or done == cfg.max_steps:
                try:
                    stopped_early = run_validation(done)
                except Diverged as exc:
                    raise diverged(exc) from None
                if stopped_early:
                    say(
                        f"{description}: early stop at step {done}: no lower val_loss in "
                        f"{cfg.patience} validations; keeping step {best['step']}'s weights"
                    )
                    break
            if any_rank(stop_requested(), device):
                checkpoint(done)
                where = f" (checkpoint in {checkpoint_dir})" if checkpoint_dir else ""
                say(f"{description}: stopped at step {done}{where}")
                raise KeyboardInterrupt
            interval = cfg.checkpoint_interval
            if interval > 0 and done % interval == 0 and done < cfg.max_steps:
                checkpoint(done)

    if window_losses:  # stopped early between two rows of the curve
        train_rows.append({"step": done, "train_loss": sum(window_losses) / len(window_losses)})
        train_rows[-1] |= {"lr": lr_at(done - 1, cfg), "tokens_per_s": 0.0, "grad_norm": 0.0}
        if plot_dir is not None and main:
            write_csv(plot_dir / "train.csv", train_rows)
    if cfg.patience > 0 and best["state"] is not None:
        model.load_state_dict(best["state"], strict=False)
    if checkpoint_dir is not None and main:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    if size > 1:
        dist.barrier()  # nobody leaves (and tears the group down) while rank 0 still writes
    return TrainResult(
        steps=done,
        tokens=tokens,
        train_loss=float(train_rows[-1]["train_loss"]) if train_rows else math.nan,
        val={k: v for k, v in val_rows[-1].items() if k != "step"},
        best_step=int(best["step"]),
        best_val_loss=float(best["val_loss"]),
        tokens_per_s=session_tokens / max(train_seconds, 1e-9),
        seconds=time.perf_counter() - started,
        resumed_from=start,
        train_rows=train_rows,
        val_rows=val_rows,
        stopped_early=stopped_early,
    )
