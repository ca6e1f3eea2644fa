"""Attention maps: the weights of every head of every layer on a text, drawn as heatmaps.

The weights come from an explicit capture (`GPT.forward(..., attention=list)`), one
(B, H, T, T) tensor per layer. One PNG per layer, its heads in a grid, the tokens on both
axes (rows: the attending token, columns: the token attended to). Drawn with matplotlib's
Agg canvas directly, so no display and no global pyplot state are involved.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import tiktoken
import torch

from gptpipe.default_paths import ATTENTION_JSON
from gptpipe.generate.text import context_ids
from gptpipe.model.gpt import GPT
from gptpipe.outputs import folder_kind

MAX_LABELS = 48  # beyond this many tokens, label every n-th one
# A folder of attention maps (layer_NN.png; the sample stage adds attention.json), as
# gptpipe.outputs recognises it.
ATTENTION_FOLDER = folder_kind("attention maps folder", {ATTENTION_JSON}, only_suffix=".png")


@torch.inference_mode()
def attention_weights(model: GPT, ids: list[int]) -> list[torch.Tensor]:
    """Per layer, the (H, T, T) attention weights of the model on `ids`."""
    was_training = model.training
    model.eval()
    captured: list[torch.Tensor] = []
    device = next(model.parameters()).device
    model(torch.tensor([ids], device=device), attention=captured)
    model.train(was_training)
    return [w[0].float().cpu() for w in captured]


def token_labels(encoding: tiktoken.Encoding, ids: list[int]) -> list[str]:
    """Readable tick labels: whitespace made visible, long tokens shortened."""
    labels = []
    for i in ids:
        text = encoding.decode_single_token_bytes(i).decode("utf-8", errors="replace")
        text = text.replace(" ", "\u2423").replace("\n", "\u21b5").replace("\t", "\u21e5")
        labels.append(text if len(text) <= 12 else text[:11] + "\u2026")
    return labels


def draw_attention(
    model: GPT, encoding: tiktoken.Encoding, text: str, out_dir: Path | str
) -> list[Path]:
    """Write `layer_NN.png` per layer into `out_dir`; returns their paths, in layer order.

    An empty text is the start of a document (`<|endoftext|>`); a text longer than the
    context is cut from the left (with a warning on stderr).
    """
    # imported here: every `gptpipe` command imports this module, few of them draw
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = context_ids(model, encoding, text)
    labels = token_labels(encoding, ids)
    layers = attention_weights(model, ids)
    T = len(ids)
    every = max(1, math.ceil(T / MAX_LABELS))
    ticks = list(range(0, T, every))
    paths = []
    for layer, weights in enumerate(layers):
        heads = weights.size(0)
        cols = math.ceil(math.sqrt(heads))
        rows = math.ceil(heads / cols)
        cell = max(2.6, min(0.16 * T, 7.0))  # inches per head: room for the labels
        fig = Figure(figsize=(cols * cell + 1.2, rows * cell + 0.9), dpi=110, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(rows, cols, squeeze=False)
        image = None
        for h, ax in enumerate(axes.flat):
            if h >= heads:
                ax.set_axis_off()
                continue
            image = ax.imshow(weights[h].numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"head {h}", fontsize=9)
            ax.set_xticks(ticks, [labels[t] for t in ticks], rotation=90, fontsize=6)
            ax.set_yticks(ticks, [labels[t] for t in ticks], fontsize=6)
            if h + cols >= heads:  # the lowest head of its column
                ax.set_xlabel("attended to", fontsize=7)
            if h % cols == 0:
                ax.set_ylabel("attending token", fontsize=7)
        if image is not None:
            fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
        # The title wraps to the figure's width (about 10 characters an inch at this size).
        width = fig.get_figwidth()
        shown = textwrap.shorten(" ".join(text.split()), 3 * int(width * 10), placeholder="...")
        span = f" (layers 0-{len(layers) - 1})" if len(layers) > 1 else ""
        title = [f"Attention of layer {layer}{span}, {heads} heads:"]
        title += textwrap.wrap(repr(shown), int(width * 10))
        fig.suptitle("\n".join(title), fontsize=11)
        path = out_dir / f"layer_{layer:02d}.png"
        fig.savefig(path)
        paths.append(path)
    return paths
