"""DVC stage `evaluate`: sliding-window perplexity and bits per byte of models on the val split."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from gptpipe import default_paths
from gptpipe.config import EvaluateConfig
from gptpipe.errors import BadInput
from gptpipe.evaluation import (
    check_model_dir,
    evaluate_source,
    evaluate_text,
    evaluate_tokens,
)
from gptpipe.metrics import headline, ran_with, wall_seconds, write_metrics
from gptpipe.model.folder import read_info
from gptpipe.options import ModelsOption, ParamsOption, RunDetailsOption, SetOption, section
from gptpipe.outputs import Output, check_paths
from gptpipe.progress import wrote
from gptpipe.tokenizer.folder import tokenizer_hash
from gptpipe.tokens.shards import load_split, read_manifest

_DEFAULT_MODELS = [default_paths.BASE, default_paths.INSTRUCT_MODEL]
_DEFAULT_OUT = default_paths.METRICS / "evaluate.json"


def _check_matches_shards(model_dir: Path, manifest: dict[str, Any], shards: Path) -> None:
    """The model must read the ids the shards were written with (same tokenizer)."""
    vocab = read_info(model_dir).config.vocab_size
    if vocab != manifest["vocab_size"]:
        raise BadInput(
            f"{model_dir}: vocabulary of {vocab} ids does not match the shards' "
            f"{manifest['vocab_size']} ({shards}/manifest.json): model and tokenizer differ"
        )
    if tokenizer_hash(model_dir) != manifest["tokenizer_hash"]:
        raise BadInput(
            f"{model_dir}: its tokenizer is not the one the shards were written with "
            f"(tokenizer_hash in {shards}/manifest.json differs)"
        )


def run(
    cfg: EvaluateConfig,
    shards: Path,
    models: list[Path],
    out: Path,
    details: Path | None = None,
) -> dict[str, Any]:
    """Evaluate each model on the val split; write the first model's bits per byte to `out`
    (the stage's headline metric, `{name: {"bits_per_byte": ...}}`) and {model dir name:
    metrics} to `details` (perplexity, bits per byte, token, byte and window counts, stride,
    context; the wall seconds of the stage and its params)."""
    started = time.perf_counter()
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise BadInput(f"model folders must have distinct names (keys of {out}): {names}")
    for model_dir in models:
        check_model_dir(model_dir)
    manifest = read_manifest(shards)
    for model_dir in models:
        _check_matches_shards(model_dir, manifest, shards)
    vocab = min(read_info(m).config.vocab_size for m in models)
    tokens = load_split(shards, "val", vocab_size=vocab).astype(np.int64)
    if tokens.size < 2:
        raise BadInput(f"{shards}: the val split holds {tokens.size} tokens, too few to evaluate")
    metrics = {m.name: evaluate_tokens(cfg, m, tokens, label=f"evaluate {m.name}") for m in models}
    record = metrics | {"wall_seconds": wall_seconds(started)} | ran_with(evaluate=cfg)
    first = models[0].name
    write_metrics(out, headline("evaluate", metrics[first], namespace=first), details, record)
    return metrics


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    model: ModelsOption = None,
    text: Annotated[
        Path | None,
        typer.Option(help="Evaluate this UTF-8 text file instead of the val split (one model)."),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="Evaluate a corpus as `download` reads it (one model): a named set "
            "(stdlib, tinyshakespeare), a URL or a path (archive.zip#member too).",
        ),
    ] = None,
    mirror: Annotated[
        Path | None,
        typer.Option(
            help="With --source: folder looked in first for named sets (else $GPTPIPE_MIRROR)."
        ),
    ] = None,
    shards: Annotated[Path, typer.Option(help="Shards folder; its val split is evaluated.")] = (
        default_paths.SHARDS
    ),
    out: Annotated[Path, typer.Option(help="Metrics JSON written in stage mode.")] = _DEFAULT_OUT,
    details: RunDetailsOption = default_paths.RUNS / "evaluate.json",
    stride: Annotated[
        int | None, typer.Option(help="Window stride in tokens (overrides evaluate.stride).")
    ] = None,
) -> None:
    """Perplexity (sliding window, window = the model's context) and bits per byte.

    Stage mode: every --model on the shards' val split, written to --out and --details (one
    summary line on stderr). With --text FILE or --source SOURCE: one model on any text file
    or corpus source; prints one JSON object on stdout.
    """
    overrides = [*(set_ or []), *([f"evaluate.stride={stride}"] if stride is not None else [])]
    cfg: EvaluateConfig = section("evaluate", params, overrides)
    if text is not None and source is not None:
        raise BadInput("--text and --source: give one of them")
    if (text is not None or source is not None) and model and len(model) > 1:
        raise BadInput(f"{'--text' if text else '--source'} evaluates one model: give one --model")
    one = model[0] if model else default_paths.BASE
    if text is not None:
        print(json.dumps(evaluate_text(cfg, one, text), indent=2))
    elif source is not None:
        print(json.dumps(evaluate_source(cfg, one, source, mirror), indent=2))
    else:  # stage mode: the results are in the files, the DVC log gets one line
        models = list(model) if model else _DEFAULT_MODELS
        inputs = [("--params", params), ("--shards", shards), *(("--model", m) for m in models)]
        check_paths([Output("--out", out), Output("--details", details)], inputs)
        metrics = run(cfg, shards, models, out, details)
        said = "; ".join(
            f"{name} perplexity {m['perplexity']:.1f}, {m['bits_per_byte']:.3f} bits/byte"
            for name, m in metrics.items()
        )
        wrote("evaluate", out, details, summary=said)
