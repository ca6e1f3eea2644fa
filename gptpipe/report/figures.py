"""The report's figures as PNG files: loss, accuracy and learning-rate curves per training
stage, and the classifier's confusion matrix.

Every figure has titled axes, and curves with few points are drawn with markers, so a run of
one logging interval still shows its single point.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from gptpipe.outputs import folder_kind
from gptpipe.report.inputs import STAGES

KINDS = ("loss", "accuracy", "lr")  # figure kinds per stage, in report order
FIGURES_FOLDER = folder_kind("figures folder", only_suffix=".png")  # gptpipe.outputs
TITLES = {"loss": "loss", "accuracy": "accuracy", "lr": "learning rate"}
STAGE_NAMES = {
    "pretrain": "pretraining",
    "instruct": "instruction tuning",
    "classify": "classification tuning",
}
DPI = 110
MARKERS_UP_TO = 40  # points; denser curves are drawn as plain lines


def _finite(values: list[float]) -> bool:
    return any(not math.isnan(v) for v in values)


def figure_curves(curves: dict[str, dict[str, list[float]]], kind: str) -> list[tuple[str, str]]:
    """The (split, column) pairs to draw for `kind` ("loss", "accuracy" or "lr")."""
    if kind == "lr":
        train = curves.get("train", {})
        return [("train", "lr")] if "lr" in train and _finite(train["lr"]) else []
    pairs = []
    for split in ("train", "val"):
        for column in curves.get(split, {}):
            if column.endswith(f"_{kind}") and _finite(curves[split][column]):
                pairs.append((split, column))
    return pairs


def _figure(width: float = 6.4, height: float = 3.6) -> Any:
    from matplotlib.figure import Figure  # imported here: `gptpipe info` needs no matplotlib

    return Figure(figsize=(width, height), dpi=DPI)


def _save(fig: Any, out: Path) -> None:
    fig.tight_layout()
    fig.savefig(out, format="png", metadata={"Software": None})


def plot_curves(
    stage: str, curves: dict[str, dict[str, list[float]]], kind: str, out: Path
) -> bool:
    """Draw one stage's `kind` curves against step into the PNG `out`; False if none exist."""
    pairs = figure_curves(curves, kind)
    if not pairs:
        return False
    from matplotlib.ticker import MaxNLocator

    fig = _figure()
    ax = fig.add_subplot()
    for split, column in pairs:
        steps, values = curves[split]["step"], curves[split][column]
        points = [(s, v) for s, v in zip(steps, values, strict=True) if not math.isnan(v)]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        style: dict[str, Any] = {"linewidth": 1.2}
        if split == "val" or len(xs) <= MARKERS_UP_TO:
            style |= {"marker": "o", "markersize": 4}
        label = "learning rate" if kind == "lr" else column.replace("_", " ")
        ax.plot(xs, ys, label=label, **style)
    if kind == "lr":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_xlabel("step")
    ax.set_ylabel(TITLES[kind])
    ax.set_title(f"{STAGE_NAMES.get(stage, stage)}: {TITLES[kind]}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save(fig, out)
    return True


def confusion_counts(
    rows: list[dict[str, Any]],
) -> tuple[list[str], list[list[int]]]:
    """(labels, counts[actual][predicted]) of confusion rows; labels sorted, both axes alike."""
    labels = sorted({str(r["actual"]) for r in rows} | {str(r["predicted"]) for r in rows})
    index = {label: i for i, label in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for r in rows:
        counts[index[str(r["actual"])]][index[str(r["predicted"])]] += 1
    return labels, counts


def plot_confusion(rows: list[dict[str, Any]], out: Path) -> bool:
    """The confusion matrix (rows: actual class, columns: predicted) with counts in cells."""
    if not rows:
        return False
    labels, counts = confusion_counts(rows)
    side = min(9.0, max(4.0, 3.0 + 0.6 * len(labels)))
    fig = _figure(side + 1.8, side)
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, label="records")
    peak = max(max(row) for row in counts) or 1
    for i, row in enumerate(counts):
        for j, value in enumerate(row):
            color = "white" if value > peak / 2 else "black"
            ax.text(j, i, str(value), ha="center", va="center", color=color)
    ax.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 4 else 0)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("actual class")
    ax.set_title(f"classification: confusion matrix ({len(rows)} test records)")
    _save(fig, out)
    return True


def write_figures(
    curves: dict[str, dict[str, dict[str, list[float]]]],
    folder: Path,
    confusion: list[dict[str, Any]] | None = None,
) -> dict[str, list[str]]:
    """Draw every stage's figures into `folder`; {stage: [file names]} in report order."""
    made: dict[str, list[str]] = {}
    for stage in STAGES:
        for kind in KINDS:
            name = f"{stage}_{kind}.png"
            if stage in curves and plot_curves(stage, curves[stage], kind, folder / name):
                made.setdefault(stage, []).append(name)
    if confusion and plot_confusion(confusion, folder / "classify_confusion.png"):
        made.setdefault("classify", []).append("classify_confusion.png")
    return made
