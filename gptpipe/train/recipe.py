"""One recipe for the three trainings (pretraining, instruction and classification tuning).

A stage reads its data and builds a `Recipe`: the model, its micro-batches, its loss, its
validation, what a resumed checkpoint must match, and the params it runs with. `fit` owns the
skeleton the three stages share: every output staged so that they appear together or not at
all (the model folder, the headline metrics, the curves the loop writes as it goes, the
stage's own file, the run details), the one training loop, the stage's `conclude` (which saves
the finished model and adds the stage's own figures), and the metrics split into the DVC
headline and the run details (`gptpipe.metrics`). Under torchrun only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gptpipe.config import TrainingConfig
from gptpipe.fsutil import staged_outputs
from gptpipe.metrics import headline, wall_seconds, write_metrics
from gptpipe.train.loop import BatchAt, LossOf, TrainResult, Validate, train


@dataclass
class TrainingPaths:
    """Where a training stage writes: the model folder, the headline metrics file, the curves
    folder, the resumable checkpoint folder (None: no checkpoints), the run details (None:
    not written) and the stage's own file (instruct: the test responses; classify: the
    per-split scores)."""

    out: Path
    metrics: Path
    plots: Path
    checkpoints: Path | None = None
    details: Path | None = None
    extra: Path | None = None


@dataclass
class Staged:
    """The staged paths `conclude` writes to (renamed in with the rest when all is written):
    the model folder, the curves folder (which already holds the loop's curves) and the
    stage's own file."""

    model: Path
    plots: Path
    extra: Path | None


# conclude(the trained model's result, where to write) -> the stage's own figures, added to
# the loop's (`TrainResult.metrics`) in the run details
Conclude = Callable[[TrainResult, Staged], dict[str, Any]]


@dataclass
class Recipe:
    """What a stage trains and how; `fit` runs it."""

    stage: str  # pretrain | instruct | classify: the DVC metrics' namespace
    description: str  # the progress bar's label
    cfg: TrainingConfig  # max_steps already set (from epochs where given)
    model: nn.Module  # on its device, seeded
    batch_at: BatchAt
    loss_of: LossOf
    validate: Validate
    checkpoint_key: dict[str, Any]  # what a checkpoint must match to be resumed
    params: dict[str, Any]  # `gptpipe.metrics.ran_with(...)`: recorded in the run details
    device: torch.device
    language_model: bool = True  # the validation loss has a perplexity
    rank: int = 0  # under torchrun, this process's rank (only rank 0 writes)
    started: float = field(default_factory=time.perf_counter)  # for wall_seconds


def fit(recipe: Recipe, paths: TrainingPaths, conclude: Conclude) -> dict[str, Any]:
    """Train `recipe` and write every output of `paths` together; returns the run's figures
    (the loop's, the stage's own from `conclude`, the device, the CPU threads and the wall
    seconds)."""
    targets = [paths.out, paths.metrics, paths.plots]
    targets += [p for p in (paths.extra, paths.details) if p is not None]
    with _staged(recipe.rank, targets) as staged:
        new = dict(zip(targets, staged, strict=True))
        result = train(
            recipe.model,
            recipe.cfg,
            batch_at=recipe.batch_at,
            loss_of=recipe.loss_of,
            validate=recipe.validate,
            plot_dir=new[paths.plots],
            checkpoint_dir=paths.checkpoints,
            checkpoint_key=recipe.checkpoint_key,
            description=recipe.description,
        )
        metrics = result.metrics(perplexity=recipe.language_model)
        if recipe.rank != 0:
            return metrics
        extra = new[paths.extra] if paths.extra is not None else None
        metrics |= conclude(result, Staged(new[paths.out], new[paths.plots], extra))
        # the CPU threads it ran with (gptpipe.runtime.set_threads: a DVC queue's share)
        metrics |= {"device": str(recipe.device), "threads": torch.get_num_threads()}
        metrics |= {"wall_seconds": wall_seconds(recipe.started)}
        details = new[paths.details] if paths.details is not None else None
        ran = metrics | recipe.params
        write_metrics(new[paths.metrics], headline(recipe.stage, metrics), details, ran)
    return metrics


@contextlib.contextmanager
def _staged(rank: int, targets: list[Path]) -> Iterator[list[Path]]:
    """Staged paths on rank 0, committed together on success; other ranks write nothing and
    get the paths as they are."""
    if rank != 0:
        yield targets
        return
    with staged_outputs(*targets) as staged:
        yield staged
