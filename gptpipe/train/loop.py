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
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from rich.progress import TextColumn
from torch import nn

from gptpipe.config import TrainingConfig
from gptpipe.errors import BadInput
from gptpipe.progress import console, progress
from gptpipe.runtime import resolve_dtype
from gptpipe.train.curves import write_csv
from gptpipe.train.distributed import all_mean, any_rank, prepare, world
from gptpipe.train.optim import lr_at, make_optimizer
from gptpipe.train.precision import autocast, evaluating, grad_scaler
from gptpipe.train.signals import stop_requests
from gptpipe.train.state import (
    fingerprint,
    load_checkpoint,
    read_checkpoint_state,
    recover_checkpoint,
    save_checkpoint,
)

Batch = Sequence[torch.Tensor]
BatchAt = Callable[[int], Batch]
LossOf = Callable[[nn.Module, Batch], torch.Tensor]
Validate = Callable[[nn.Module], dict[str, float]]


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


def to_device(batch: Batch, device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(device, non_blocking=True) for t in batch)


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
