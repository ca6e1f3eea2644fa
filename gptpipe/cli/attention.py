"""`gptpipe attention`: per-layer attention heatmaps of a model on a text, as PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gptpipe import default_paths
from gptpipe.fsutil import staged_outputs
from gptpipe.generate.attention import ATTENTION_FOLDER, draw_attention
from gptpipe.model.folder import load_language_model
from gptpipe.outputs import Output, check_paths


def command(
    text: Annotated[str, typer.Option(help="Text to read ('' is the start of a document).")],
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for layer_NN.png, one per layer, replaced whole (a folder of "
            "anything but attention maps only with --force)."
        ),
    ] = Path("attention"),
    model: Annotated[
        Path, typer.Option(help="Model folder (language model).")
    ] = default_paths.BASE,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "cpu",
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace --out even if it holds more than attention maps."),
    ] = False,
) -> None:
    """Draw each layer's attention weights (heads in a grid, tokens on the axes) to PNG.

    The maps appear together or not at all, and replace the folder's earlier maps (a
    shallower model leaves no stale layers behind).
    """
    check_paths(
        [Output("--out", out, ATTENTION_FOLDER)],
        [("--model", model)],
        force=force,
        force_option="--force",
    )
    lm, encoding = load_language_model(model, device)
    with staged_outputs(out) as (staged,):
        drawn = draw_attention(lm, encoding, text, staged)
    for path in drawn:
        print(out / path.name)
