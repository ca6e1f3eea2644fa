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

import functools
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import TextColumn
from torch import nn

from gptpipe.config import TrainingConfig
from gptpipe.errors import BadInput
from gptpipe.progress import console, progress
from gptpipe.train.curves import write_csv
from gptpipe.train.distributed import (
    Placement,
    accumulating,
    all_mean,
    any_rank,
    barrier,
    prepare,
    shard,
    unshard_into,
)
from gptpipe.train.optim import lr_at, make_optimizer
from gptpipe.train.precision import autocast, evaluating, grad_scaler
from gptpipe.train.signals import stop_requests
from gptpipe.train.state import (
    TrainState,
    fingerprint,
    load_checkpoint,
    open_training_checkpoint,
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
    """What a finished run reports; `val` is the metrics of the validation of the weights
    kept (the last one, or the best one with keep: best)."""

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
    kept: str = "final"  # which weights the model ends with: final or best
    kept_step: int = 0  # the step those weights are from
    train_rows: list[dict[str, float]] = field(default_factory=list)
    val_rows: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        state: TrainState,
        resumed_from: int,
        meter: _Throughput,
        stopped_early: bool,
        kept_best: bool,
    ) -> TrainResult:
        """The result of a run that ended in `state` (this session: `meter`); `kept_best`:
        the model holds the weights of the lowest val_loss, not the last step's."""
        rows = state.train_rows
        kept_step = state.best_step if kept_best else state.step
        kept = [r for r in state.val_rows if r["step"] == kept_step] or state.val_rows[-1:]
        return cls(
            steps=state.step,
            tokens=state.tokens,
            train_loss=float(rows[-1]["train_loss"]) if rows else math.nan,
            val={k: v for k, v in kept[-1].items() if k != "step"},
            best_step=state.best_step,
            best_val_loss=state.best_val_loss,
            tokens_per_s=meter.rate(),
            seconds=time.perf_counter() - meter.started,
            resumed_from=resumed_from,
            stopped_early=stopped_early,
            kept="best" if kept_best else "final",
            kept_step=kept_step,
            train_rows=rows,
            val_rows=state.val_rows,
        )

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
            "kept": self.kept,
            "kept_step": self.kept_step,
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
    place: Placement | None = None,
) -> tuple[float, int, float]:
    """One optimizer step over `grad_accum` micro-batches: returns (mean loss over all ranks,
    tokens over all ranks, gradient norm before clipping). A non-finite loss or gradient is
    Diverged (except a float16 overflow, which the gradient scaler skips and backs off from).

    `net` is what the forward passes go through (the model wrapped by DistributedDataParallel
    and/or torch.compile; default: `model`); the optimizer and clipping see `model`'s
    parameters. Under DDP the gradients are all-reduced on the last micro-batch only; under
    FSDP `model` is the sharded one and each micro-batch's gradients are reduce-scattered.
    `place` is the run's Placement (default: resolved from `cfg` and the model's device).
    """
    net = net if net is not None else model
    place = place or Placement.of(cfg, next(model.parameters()).device)
    hint = f"lower {cfg._section()}.learning_rate or check the data"
    for group in optimizer.param_groups:
        group["lr"] = lr
    step_loss, step_tokens = 0.0, 0
    for micro in range(cfg.grad_accum):
        batch = to_device(batch_at(step * cfg.grad_accum + micro), place.device)
        with accumulating(net, place, last=micro == cfg.grad_accum - 1):
            with autocast(place.device, place.dtype):
                loss = loss_of(net, batch)
            scaled = loss / cfg.grad_accum
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        step_loss += float(loss.detach()) / cfg.grad_accum
        step_tokens += batch[0].numel()
    step_loss = all_mean(step_loss, place)
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
    if place.device.type == "cuda":
        torch.cuda.synchronize(place.device)
    return step_loss, step_tokens * place.world_size, norm


@dataclass
class _Checkpoints:
    """Where and under which fingerprint a run's training checkpoints go (rank 0 writes)."""

    directory: Path | None
    key: str
    place: Placement
    saved: int = 0  # step of the last checkpoint written or resumed (0: none)

    def save(
        self,
        state: TrainState,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
    ) -> None:
        state.scaler = scaler.state_dict() if scaler is not None else None
        if self.directory is not None:  # every rank: under FSDP the shards are gathered
            save_checkpoint(
                self.directory, state, model, optimizer, self.key, write=self.place.main
            )
        self.saved = state.step

    def diverged(self, exc: Diverged) -> Diverged:
        """`exc`, saying which training checkpoint survives it."""
        if self.directory is None:
            kept = "no checkpoints were asked for"
        elif self.saved > 0:
            kept = f"the last good checkpoint (step {self.saved}) is kept in {self.directory}"
        else:
            kept = "no checkpoint had been written yet"
        return Diverged(f"{exc}; {kept}")


def _resume(
    checkpoints: _Checkpoints,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    max_steps: int,
    say: Callable[[str], object],
) -> TrainState:
    """The state to start from: a compatible training checkpoint's (model, optimizer and RNG
    restored from it), else a fresh one. Rank 0 recovers the folder (and sets a broken one
    aside) before every rank reads it."""
    directory, place = checkpoints.directory, checkpoints.place
    if directory is None:
        return TrainState()

    def load(folder: Path) -> TrainState | None:
        return load_checkpoint(folder, model, optimizer, checkpoints.key, max_steps)

    state = open_training_checkpoint(directory, load, say) if place.main else None
    barrier(place)
    if not place.main:
        state = load(directory)
    if state is not None:
        checkpoints.saved = state.step
        say(f"resuming from the checkpoint at step {state.step}")
        return state
    if directory.exists():
        say(f"ignoring the incompatible checkpoint in {directory}")
    return TrainState()


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
    training finishes. With `cfg.keep` best the model ends with the weights of its lowest
    val_loss; with `cfg.patience`, training stops early after that many validations without
    a new lowest val_loss.

    In a process group (torchrun), every rank runs this with the same arguments; gradients are
    averaged by DistributedDataParallel (or, under fsdp, a fully sharded copy of the model
    trains and its weights are put back into `model` at the end), the logged losses over the
    ranks, and only rank 0 writes curves and checkpoints (all ranks read a checkpoint to
    resume: a shared folder).
    """
    place = Placement.of(cfg, next(model.parameters()).device)
    home, model = model, shard(model, place)  # fsdp: a sharded copy trains, home waits on the host
    optimizer = make_optimizer(model, cfg)
    scaler = grad_scaler(place.device, place.dtype)
    extra = dict(checkpoint_key or {}) | {"dtype": place.dtype}
    extra |= {"world_size": place.world_size} if place.world_size > 1 else {}
    checkpoints = _Checkpoints(checkpoint_dir, fingerprint(cfg, extra), place)

    def say(text: str) -> None:
        if place.main:
            console.print(f"{description}: {text}", soft_wrap=True, markup=False)

    def write(name: str, rows: list[dict[str, float]]) -> None:
        if plot_dir is not None and place.main:
            write_csv(plot_dir / name, rows)

    state = _resume(checkpoints, model, optimizer, cfg.max_steps, say)
    if scaler is not None and state.scaler:
        scaler.load_state_dict(state.scaler)
    start, meter, stopped_early = state.step, _Throughput(), False
    one_step = functools.partial(
        optimizer_step, net=prepare(model, cfg, place), scaler=scaler, place=place
    )
    model.train()
    bar = progress(*_COLUMNS)
    bar.disable = not place.main
    with stop_requests() as stop_requested, bar:
        task = bar.add_task(description, total=cfg.max_steps, completed=start, loss=0, lr=0, tps=0)
        for step in range(start, cfg.max_steps):
            t0, lr = time.perf_counter(), lr_at(step, cfg)
            try:
                loss, tokens, norm = one_step(model, optimizer, cfg, lr, step, batch_at, loss_of)
            except Diverged as exc:
                raise checkpoints.diverged(exc) from None
            meter.add(tokens, time.perf_counter() - t0)
            state.step, state.tokens = step + 1, state.tokens + tokens
            state.window_losses.append(loss)
            done = state.step
            bar.update(task, completed=done, loss=loss, lr=lr, tps=meter.window_rate())
            if done % cfg.log_interval == 0 or done == cfg.max_steps:
                state.log_window(lr, meter.window_rate(), norm)
                write("train.csv", state.train_rows)
                meter.new_window()
            if done % cfg.eval_interval == 0 or done == cfg.max_steps:
                try:
                    metrics = _validated(model, validate, place, done)
                except Diverged as exc:
                    raise checkpoints.diverged(exc) from None
                stopped_early = state.observe(metrics, model, cfg.patience, cfg.keep == "best")
                write("val.csv", state.val_rows)
                say(f"step {done}/{cfg.max_steps}  " + _shown(metrics))
                if stopped_early:
                    say(
                        f"early stop at step {done}: no lower val_loss in {cfg.patience} "
                        f"validations; keeping step {state.best_step}'s weights"
                    )
                    break
            if any_rank(stop_requested(), place):
                checkpoints.save(state, model, optimizer, scaler)
                where = f" (checkpoint in {checkpoint_dir})" if checkpoint_dir else ""
                say(f"stopped at step {done}{where}")
                raise KeyboardInterrupt
            interval = cfg.checkpoint_interval
            if interval > 0 and done % interval == 0 and done < cfg.max_steps:
                checkpoints.save(state, model, optimizer, scaler)
        bar.update(task, tps=meter.rate())  # the finished bar: the run's rate, not a window's

    if state.window_losses:  # stopped early between two rows of the curve
        state.log_window(lr_at(state.step - 1, cfg), 0.0, 0.0)
        write("train.csv", state.train_rows)
    model = unshard_into(home, model, place)  # fsdp: the trained weights back into home
    if cfg.keep == "best" and state.best_weights is not None:
        model.load_state_dict(state.best_weights, strict=False)  # the lowest val_loss's
    if checkpoint_dir is not None and place.main:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    barrier(place)  # nobody leaves (and tears the group down) while rank 0 still writes
    kept_best = cfg.keep == "best" and state.best_weights is not None
    return TrainResult.of(state, start, meter, stopped_early, kept_best)


@dataclass
class _Throughput:
    """Training time and tokens of this session (validation excluded), and of the current
    logging window (for the tokens/s of the progress line and train.csv)."""

    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    tokens: int = 0
    window_seconds: float = 0.0
    window_tokens: int = 0

    def add(self, tokens: int, seconds: float) -> None:
        self.seconds, self.window_seconds = self.seconds + seconds, self.window_seconds + seconds
        self.tokens, self.window_tokens = self.tokens + tokens, self.window_tokens + tokens

    def rate(self) -> float:
        """Tokens per second of this session's training (the run details' tokens_per_s)."""
        return self.tokens / max(self.seconds, 1e-9)

    def window_rate(self) -> float:
        return self.window_tokens / max(self.window_seconds, 1e-9)

    def new_window(self) -> None:
        self.window_tokens, self.window_seconds = 0, 0.0


_COLUMNS = (
    TextColumn("loss {task.fields[loss]:.4f}"),
    TextColumn("lr {task.fields[lr]:.2e}"),
    TextColumn("{task.fields[tps]:,.0f} tok/s"),
)


def _validated(
    model: nn.Module, validate: Validate, place: Placement, step: int
) -> dict[str, float]:
    """`validate(model)` in eval mode under the run's autocast; a non-finite loss is Diverged."""
    with evaluating(model, place.dtype):
        metrics = validate(model)
    if "val_loss" not in metrics or not math.isfinite(metrics["val_loss"]):
        raise Diverged(f"validation loss at step {step} is {metrics.get('val_loss')}")
    return metrics


def _shown(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {float(v):.4f}" for k, v in metrics.items())
