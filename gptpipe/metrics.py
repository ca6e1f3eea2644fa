"""Headline metrics vs run details: what a stage writes to its DVC metrics file, and what to
its run file beside it.

A DVC metrics file becomes columns of `dvc exp show` and rows of `dvc metrics diff`: it should
hold the numbers an experiment is judged by (losses, perplexity, accuracy, ROUGE-L). How a run
went (seconds, tokens per second, device, process count, steps, record counts) changes from
machine to machine, is noise in an experiments table, and goes to `reports/runs/<stage>.json`
instead, a plain DVC out the report reads. Keys are sorted by name, not by a list of headline
names, so a stage that adds a new metric gets it into the metrics file without touching this.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gptpipe.fsutil import staged_outputs, write_json

# Keys (at any depth) that describe the run rather than its result.
DETAILS = frozenset(
    {
        # training: how much, how fast, where
        "steps",
        "tokens",
        "tokens_per_s",
        "seconds",
        "device",
        "processes",
        "dtype",
        "epochs",
        "best_step",
        "best_val_loss",  # the final val_loss is the headline; the best is on the curve
        "stopped_early",
        "resumed_from",
        "mfu",
        "flops_per_token",
        # model and data sizes (properties of the inputs, not results)
        "params_total",
        "params_non_embedding",
        "train_windows",
        "max_length",
        "labels",
        "trainable_params",
        "total_params",
        # per-split figures whose test-split twins are the headline
        "untuned_train_accuracy",
        "untuned_val_accuracy",
        "majority_baseline_train",
        "majority_baseline_val",
        "train_macro_f1",
        "val_macro_f1",
        # evaluation bookkeeping (evaluate.json per model)
        "mean_nll",
        "nll",
        "bytes",
        "windows",
        "stride",
        "block_size",
    }
)
# ...and keys ending like these (train_records, val_records, truncated_records, ...; the
# `wall_seconds` every stage records: its wall time from start to its outputs written).
DETAIL_SUFFIXES = ("_records", "_seconds")


def is_detail(key: str) -> bool:
    """Whether `key` describes how a run went rather than what it achieved."""
    return key in DETAILS or key.endswith(DETAIL_SUFFIXES)


def split_metrics(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(headline, details) of a stage's metrics; nested objects (one per model) split alike."""
    headline: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            inner_headline, inner_details = split_metrics(value)
            if inner_headline:
                headline[key] = inner_headline
            if inner_details:
                details[key] = inner_details
        elif is_detail(key):
            details[key] = value
        else:
            headline[key] = value
    return headline, details


def write_metrics(metrics_path: Path, metrics: dict[str, Any], details_path: Path | None) -> None:
    """Write the headline metrics to `metrics_path` and the run details to `details_path`
    (dropped when None: a caller that wants them has the full dict it passed in), the two
    files together or neither."""
    headline, details = split_metrics(metrics)
    with staged_with_details(metrics_path, details_path) as (new_metrics, new_details):
        write_json(new_metrics, headline)
        if new_details is not None:
            write_json(new_details, details)


def wall_seconds(started: float) -> float:
    """Seconds since `started` (a `time.perf_counter()` reading), to the millisecond: the wall
    time a stage records in its run details as `wall_seconds`."""
    return round(time.perf_counter() - started, 3)


@contextlib.contextmanager
def staged_with_details(out: Path, details: Path | None) -> Iterator[tuple[Path, Path | None]]:
    """Staged paths for a stage's output (nothing created there yet: write a file or folder
    at it) and for its run details file (None when `details` is None); on success both
    replace their targets together (`gptpipe.fsutil.staged_outputs`)."""
    targets = [out] if details is None else [out, details]
    with staged_outputs(*targets) as staged:
        yield staged[0], (staged[1] if details is not None else None)
