"""DVC stage `weights`: provide the base model that both fine-tunings start from.

`base.source` picks it: `pretrain` copies the model this pipeline pretrained; `gpt2` ...
`gpt2-xl` converts OpenAI's released weights (see gptpipe.interop.hub for where they come from);
a folder path converts a GPT-2 checkpoint in the Hugging Face or OpenAI format. Converted
weights are streamed tensor by tensor into `models/base` (no double copy, so GPT-2 XL fits
in about its own size of memory), and the folder gets the tokenizer that matches them.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from gptpipe import default_paths
from gptpipe.config import GPT2_NAMES, BaseConfig
from gptpipe.fsutil import write_json
from gptpipe.interop.compat import check_size, matching_tokenizer
from gptpipe.interop.gpt2_formats import open_gpt2_checkpoint
from gptpipe.interop.hub import SIZES, resolve
from gptpipe.metrics import ran_with, staged_with_details, wall_seconds
from gptpipe.model.folder import MODEL_FOLDER, copy_model, read_info, save_tensors
from gptpipe.options import ParamsOption, SetOption, StageDetailsOption, section
from gptpipe.outputs import Output, check_paths
from gptpipe.progress import wrote
from gptpipe.sources.fetch import FetchOptions


def run(
    cfg: BaseConfig,
    pretrained: Path,
    out: Path,
    tokenizer: Path | None = None,
    details: Path | None = None,
) -> dict[str, Any]:
    """Write the base model folder from `cfg.source` (and the run details `details`: source,
    wall seconds, together with it); returns a short description of it.

    `tokenizer` is the pipeline's tokenizer folder: converted weights must read the ids it
    writes (None skips that check).
    """
    started = time.perf_counter()
    with staged_with_details(out, details) as (new_out, new_details):
        result = _write(cfg, pretrained, new_out, tokenizer)
        if new_details is not None:
            record = {"source": cfg.source, "wall_seconds": wall_seconds(started)}
            write_json(new_details, record | ran_with(base=cfg))
    return result


def _write(cfg: BaseConfig, pretrained: Path, out: Path, tokenizer: Path | None) -> dict[str, Any]:
    if cfg.source == "pretrain":
        copy_model(pretrained, out)
        info = read_info(out)
        return {"source": cfg.source, "model": info.config.to_dict(), "meta": info.meta}
    size = SIZES.get(cfg.source)
    if size is not None:
        options = FetchOptions(timeout=cfg.timeout, retries=cfg.retries)
        found = resolve(size, mirror=cfg.mirror_dir(), options=options)
        folder, provenance = found.folder, {"origin": found.origin, "files": found.files}
    else:
        folder = Path(cfg.source).expanduser()
        provenance = {"origin": str(folder.resolve())}
    checkpoint = open_gpt2_checkpoint(folder)
    if size is not None:
        check_size(checkpoint, size)
    meta = {"stage": "weights", "source": cfg.source, "format": checkpoint.format, **provenance}
    with tempfile.TemporaryDirectory(prefix="gptpipe-weights-") as tmp:
        tok_dir = matching_tokenizer(checkpoint, cfg.source, tokenizer, Path(tmp))
        save_tensors(out, checkpoint.config, checkpoint.tensors, tok_dir, meta=meta)
    return {"source": cfg.source, "model": checkpoint.config.to_dict(), "meta": meta}


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    pretrained: Annotated[
        Path, typer.Option(help="The pretrained model folder (gptpipe pretrain).")
    ] = default_paths.PRETRAIN,
    tokenizer: Annotated[
        Path,
        typer.Option(
            help="The pipeline's tokenizer folder: converted GPT-2 weights need GPT-2's "
            "(tokenizer.kind: gpt2)."
        ),
    ] = default_paths.TOKENIZER,
    out: Annotated[Path, typer.Option(help="Base model folder to write.")] = default_paths.BASE,
    details: StageDetailsOption = None,
) -> None:
    """Provide the base model for fine-tuning: the pretrained one (base.source: pretrain), or
    OpenAI's GPT-2 weights converted (gpt2 ... gpt2-xl, or a checkpoint folder)."""
    cfg: BaseConfig = section("base", params, set_)
    source = None if cfg.source in ("pretrain", *GPT2_NAMES) else Path(cfg.source)
    inputs = [("--params", params), ("--pretrained", pretrained), ("--tokenizer", tokenizer)]
    outputs = [Output("--out", out, MODEL_FOLDER), Output("--details", details)]
    check_paths(outputs, [*inputs, ("base.source", source), ("base.mirror", cfg.mirror_dir())])
    if cfg.source == "pretrain":
        run(cfg, pretrained, out, details=details)
        wrote("weights", out, details, summary=f"copied {pretrained}")
        return
    result = run(cfg, pretrained, out, tokenizer=tokenizer, details=details)
    c = result["model"]
    said = (
        f"{cfg.source} converted: {c['n_layer']} layers, {c['n_head']} heads, width "
        f"{c['n_embd']}, context {c['block_size']}, vocabulary {c['vocab_size']}"
    )
    wrote("weights", out, details, summary=said)
