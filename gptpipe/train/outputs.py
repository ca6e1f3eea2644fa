"""The outputs every training stage writes, as `gptpipe.outputs` checks them: the model
folder, the metrics file, the curves folder, the resumable checkpoint folder and the run
details (a fine-tuning adds one file of its own)."""

from __future__ import annotations

from pathlib import Path

from gptpipe.model.folder import MODEL_FOLDER
from gptpipe.outputs import Output
from gptpipe.train.curves import CURVES_FOLDER
from gptpipe.train.state import CHECKPOINT_FOLDER


def training_outputs(
    out: Path, metrics: Path, plots: Path, checkpoints: Path | None, details: Path | None
) -> list[Output]:
    """The outputs of a training stage, by the options that name them."""
    return [
        Output("--out", out, MODEL_FOLDER),
        Output("--metrics", metrics),
        Output("--plots", plots, CURVES_FOLDER),
        Output("--checkpoints", checkpoints, CHECKPOINT_FOLDER),
        Output("--details", details),
    ]
