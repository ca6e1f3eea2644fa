"""The report's figures: loss curves as PNG files."""

from __future__ import annotations

import math
from pathlib import Path

from gptpipe.report.inputs import (
    STAGES,
)

# --------------------------------------------------------------------------- figures


def figure_curves(curves: dict[str, dict[str, list[float]]], kind: str) -> list[tuple[str, str]]:
    """The (split, column) pairs to draw for `kind` ("loss" or "accuracy"), e.g. train_loss."""
    pairs = []
    for split in ("train", "val"):
        for column in curves.get(split, {}):
            if column.endswith(f"_{kind}") and any(
                not math.isnan(v) for v in curves[split][column]
            ):
                pairs.append((split, column))
    return pairs


def plot_curves(
    stage: str, curves: dict[str, dict[str, list[float]]], kind: str, out: Path
) -> bool:
    """Draw one stage's `kind` curves against step into the PNG `out`; False if none exist."""
    pairs = figure_curves(curves, kind)
    if not pairs:
        return False
    from matplotlib.figure import Figure  # imported here: `gptpipe info` needs no matplotlib

    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    ax = fig.add_subplot()
    for split, column in pairs:
        steps, values = curves[split]["step"], curves[split][column]
        style = {"marker": "o", "markersize": 3} if split == "val" else {"linewidth": 1}
        ax.plot(steps, values, label=column.replace("_", " "), **style)
    ax.set_xlabel("step")
    ax.set_ylabel(kind)
    ax.set_title(f"{stage}: {kind}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, format="png", metadata={"Software": None})
    return True


def write_figures(
    curves: dict[str, dict[str, dict[str, list[float]]]], folder: Path
) -> dict[str, list[str]]:
    """Draw every stage's loss (and accuracy) figure into `folder`; {stage: [file names]}."""
    made: dict[str, list[str]] = {}
    for stage in STAGES:
        for kind in ("loss", "accuracy"):
            name = f"{stage}_{kind}.png"
            if stage in curves and plot_curves(stage, curves[stage], kind, folder / name):
                made.setdefault(stage, []).append(name)
    return made
