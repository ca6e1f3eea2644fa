"""Headline metrics vs run details: what a stage writes to its DVC metrics file, and what to
its run file beside it.

A DVC metrics file becomes columns of `dvc exp show` and rows of `dvc metrics diff`, so it
holds the few numbers an experiment is judged by, one or two per stage, under names unique
across the files (`pretrain.val_loss`, `base.bits_per_byte`, `instruct.rougeL`,
`classify.test_accuracy`): DVC then heads each column with that name alone instead of
`reports/metrics/<file>.json:<key>`, and `dvc exp show` fits a terminal. Everything else a
stage measured (train and per-split losses, baselines, F1, counts, seconds, tokens/s, device)
and the params it ran with go to `reports/runs/<stage>.json`, a plain DVC out the report reads.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gptpipe.config import to_dict
from gptpipe.fsutil import staged_outputs, write_json

# The headline metric of each stage: {stage: (namespace, {name in the metrics file: key in
# the stage's results})}. The namespace is the model the figure describes (evaluate names it
# per run: its first model's folder name).
HEADLINE: dict[str, tuple[str | None, dict[str, str]]] = {
    "pretrain": ("pretrain", {"val_loss": "val_loss"}),
    "evaluate": (None, {"bits_per_byte": "bits_per_byte"}),
    "instruct": ("instruct", {"rougeL": "test_rougeL"}),
    "classify": ("classify", {"test_accuracy": "test_accuracy"}),
}


def headline(stage: str, results: Mapping[str, Any], namespace: str | None = None) -> dict:
    """The DVC metrics file of `stage`: its headline figures taken from `results` (a figure
    the run did not produce is left out), nested under the stage's namespace."""
    default, names = HEADLINE[stage]
    space = namespace or default
    if space is None:
        raise ValueError(f"stage {stage!r} needs a namespace for its headline metrics")
    picked = {name: results[key] for name, key in names.items() if key in results}
    return {space: picked} if picked else {}


def write_metrics(
    metrics_path: Path,
    headline_metrics: dict[str, Any],
    details_path: Path | None,
    details: dict[str, Any],
) -> None:
    """Write the headline metrics to `metrics_path` and the run details to `details_path`
    (dropped when None), the two files together or neither."""
    with staged_with_details(metrics_path, details_path) as (new_metrics, new_details):
        write_json(new_metrics, headline_metrics)
        if new_details is not None:
            write_json(new_details, details)


def wall_seconds(started: float) -> float:
    """Seconds since `started` (a `time.perf_counter()` reading), to the millisecond: the wall
    time a stage records in its run details as `wall_seconds`."""
    return round(time.perf_counter() - started, 3)


def ran_with(**sections: Any) -> dict[str, Any]:
    """The `params` entry of a stage's run details: each params section it read, as it ran
    (after -S overrides and derived values such as max_steps from epochs). The report shows
    these, not params.yaml, so it says what ran."""
    return {"params": {name: to_dict(cfg) for name, cfg in sections.items()}}


@contextlib.contextmanager
def staged_with_details(out: Path, details: Path | None) -> Iterator[tuple[Path, Path | None]]:
    """Staged paths for a stage's output (nothing created there yet: write a file or folder
    at it) and for its run details file (None when `details` is None); on success both
    replace their targets together (`gptpipe.fsutil.staged_outputs`)."""
    targets = [out] if details is None else [out, details]
    with staged_outputs(*targets) as staged:
        yield staged[0], (staged[1] if details is not None else None)
