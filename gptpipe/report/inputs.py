"""What the report reads: metrics JSON, curve CSVs, model folders and sample lists, all of them
artifacts of earlier stages (the report never runs a model).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptpipe.errors import BadInput
from gptpipe.fsutil import read_json
from gptpipe.model.folder import ModelInfo, read_info
from gptpipe.model.params import (
    config_breakdown,
)

STAGES = ("pretrain", "instruct", "classify")
METRIC_FILES = ("pretrain", "instruct", "classify", "evaluate")
# reports/runs/<name>.json of every stage before the report, in pipeline order
RUN_FILES = (
    "download",
    "tokenizer",
    "shard",
    "pretrain",
    "weights",
    "instruct",
    "classify",
    "evaluate",
    "sample",
)


# --------------------------------------------------------------------------- inputs


@dataclass
class ModelEntry:
    """One model folder of the report: its config and parameter breakdown, or absent."""

    name: str
    path: Path
    info: ModelInfo | None
    params: dict[str, int] | None


@dataclass
class ReportInputs:
    """What the report is made of; any part may be missing (None / empty)."""

    title: str
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    curves: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    samples: list[dict[str, Any]] | None = None
    examples: list[dict[str, Any]] | None = None
    models: list[ModelEntry] = field(default_factory=list)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # reports/runs/<stage>.json
    params: dict[str, Any] = field(default_factory=dict)  # as the stages ran: `recorded_params`
    environment: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] | None = None  # data/raw/provenance.json
    manifest: dict[str, Any] | None = None  # data/shards/manifest.json
    tokenizer: dict[str, Any] | None = None  # models/tokenizer/tokenizer.json
    confusion: list[dict[str, Any]] | None = None  # rows {"actual", "predicted"} (test split)
    responses: list[dict[str, Any]] | None = None  # reports/instruct/responses.json
    previous: dict[str, dict[str, Any]] | None = None  # committed run's metrics; None: first
    attention: dict[str, Any] | None = None  # reports/attention/attention.json (sample stage)
    attention_dir: Path | None = None  # its folder, beside the layer_NN.png it names


def read_metrics(
    metrics_dir: Path, names: Iterable[str] = METRIC_FILES
) -> dict[str, dict[str, Any]]:
    """The metrics JSON files that exist (pretrain, instruct, classify, evaluate); the same
    for the run details folder (reports/runs, `names` RUN_FILES)."""
    found: dict[str, dict[str, Any]] = {}
    for name in names:
        path = metrics_dir / f"{name}.json"
        if path.is_file():
            data = read_json(path)
            if not isinstance(data, dict):
                raise BadInput(f"{path}: expected a JSON object of metrics")
            found[name] = data
    return found


def recorded_params(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{section: {key: value}} as the stages ran them: the `params` each stage recorded in its
    run details (after -S overrides and derived values), in pipeline order."""
    params: dict[str, Any] = {}
    for name in RUN_FILES:
        recorded = (runs.get(name) or {}).get("params")
        if isinstance(recorded, dict):
            params |= {k: v for k, v in recorded.items() if isinstance(v, dict)}
    return params


def read_object(path: Path | None) -> dict[str, Any] | None:
    """A JSON object (provenance, manifest, tokenizer.json), or None if the file is absent."""
    if path is None or not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object")
    return data


def read_confusion(path: Path) -> list[dict[str, Any]] | None:
    """Confusion rows [{"actual", "predicted"}, ...] (DVC's confusion template), or None."""
    rows = read_list(path)
    if rows is not None and not all("actual" in r and "predicted" in r for r in rows):
        raise BadInput(f"{path}: expected rows with 'actual' and 'predicted'")
    return rows


def read_curve(path: Path) -> dict[str, list[float]]:
    """A curve CSV (header row, first column `step`) as columns of floats; empty cells NaN."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise BadInput(f"{path}: file not found") from None
    if not rows or not rows[0] or rows[0][0] != "step":
        raise BadInput(f"{path}: expected a CSV whose first column is 'step'")
    header = rows[0]
    columns: dict[str, list[float]] = {name: [] for name in header}
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise BadInput(f"{path}: line {number} has {len(row)} fields, expected {len(header)}")
        for name, cell in zip(header, row, strict=True):
            try:
                columns[name].append(float(cell) if cell.strip() else math.nan)
            except ValueError:
                raise BadInput(f"{path}: line {number}: {name}={cell!r} is not a number") from None
    return columns


def read_curves(plots_dir: Path) -> dict[str, dict[str, dict[str, list[float]]]]:
    """{stage: {"train"|"val": columns}} for the curve files that exist."""
    curves: dict[str, dict[str, dict[str, list[float]]]] = {}
    for stage in STAGES:
        for split in ("train", "val"):
            path = plots_dir / stage / f"{split}.csv"
            if path.is_file():
                curves.setdefault(stage, {})[split] = read_curve(path)
    return curves


def read_models(paths: Iterable[Path]) -> list[ModelEntry]:
    """Each model folder's config and parameter counts (config.json only, no weights)."""
    entries = []
    for path in paths:
        if (path / "config.json").is_file():
            info = read_info(path)
            entries.append(ModelEntry(path.name, path, info, config_breakdown(info.config)))
        else:
            entries.append(ModelEntry(path.name, path, None, None))
    return entries


def read_list(path: Path | None) -> list[dict[str, Any]] | None:
    """A JSON list of objects (samples, instruction examples), or None if the file is absent."""
    if path is None or not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise BadInput(f"{path}: expected a JSON list of objects")
    return data
