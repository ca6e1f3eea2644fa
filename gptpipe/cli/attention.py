"""`gptpipe attention`: per-layer attention heatmaps of a model on a text, as PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gptpipe import layout
from gptpipe.generate.attention import draw_attention
from gptpipe.model.folder import load_language_model


def command(
    text: Annotated[str, typer.Option(help="Text to read ('' is the start of a document).")],
    out: Annotated[Path, typer.Option(help="Folder for layer_NN.png, one per layer.")] = Path(
        "attention"
    ),
    model: Annotated[Path, typer.Option(help="Model folder (language model).")] = layout.BASE,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "cpu",
) -> None:
    """Draw each layer's attention weights (heads in a grid, tokens on the axes) to PNG."""
    lm, encoding = load_language_model(model, device)
    for path in draw_attention(lm, encoding, text, out):
        print(path)
