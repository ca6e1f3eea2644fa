"""DVC stage `weights`: provide the base model that both fine-tunings start from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gptpipe import layout
from gptpipe.checkpoint import copy_model, read_info
from gptpipe.cliutil import ParamsOption, SetOption, section
from gptpipe.config import BaseConfig


def run(cfg: BaseConfig, pretrained: Path, out: Path) -> dict[str, Any]:
    """Write the base model folder from `cfg.source`; returns a short description of it.

    `pretrain` copies the model pretrained by this pipeline (BaseConfig refuses other
    sources until they are implemented).
    """
    if cfg.source == "pretrain":
        copy_model(pretrained, out)
    info = read_info(out)
    return {"source": cfg.source, "model": info.config.to_dict(), "meta": info.meta}


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    pretrained: Annotated[
        Path, typer.Option(help="The pretrained model folder (gptpipe pretrain).")
    ] = layout.PRETRAIN,
    out: Annotated[Path, typer.Option(help="Base model folder to write.")] = layout.BASE,
) -> None:
    """Provide the base model for fine-tuning (base.source: pretrain copies the pretrained one)."""
    run(section("base", params, set_), pretrained, out)
