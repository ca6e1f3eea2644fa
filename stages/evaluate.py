"""DVC stage `evaluate`: sliding-window perplexity and bits per byte of models on the val split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from gptpipe import layout
from gptpipe.checkpoint import load_model, read_info
from gptpipe.cliutil import ModelsOption, ParamsOption, SetOption, section
from gptpipe.config import EvaluateConfig
from gptpipe.errors import BadInput
from gptpipe.evaluation import bits_per_byte, perplexity, scored_bytes
from gptpipe.fsutil import write_json
from gptpipe.runtime import resolve_device
from gptpipe.shards import load_split, read_manifest
from gptpipe.tokenizer import load_tokenizer, tokenizer_hash

DEFAULT_MODELS = [layout.BASE, layout.INSTRUCT_MODEL]
DEFAULT_OUT = layout.METRICS / "evaluate.json"


def evaluate_tokens(
    cfg: EvaluateConfig, model_dir: Path, tokens: np.ndarray, label: str | None = None
) -> dict[str, Any]:
    """Perplexity, bits per byte and counts of one model folder on a token stream."""
    device = resolve_device(cfg.device)
    model, info = load_model(model_dir, device)
    if info.config.n_classes > 0:
        raise BadInput(f"{model_dir}: is a classifier; perplexity needs a language model")
    encoding = load_tokenizer(model_dir)
    result = perplexity(
        model, tokens, cfg.stride, cfg.batch_size, device, description=label or model_dir.name
    )
    n_bytes = scored_bytes(encoding, tokens)
    return {
        "perplexity": result["perplexity"],
        "bits_per_byte": bits_per_byte(float(result["nll"]), n_bytes),
        "mean_nll": result["mean_nll"],
        "tokens": result["tokens"],
        "bytes": n_bytes,
        "windows": result["windows"],
        "stride": result["stride"],
        "block_size": result["block_size"],
    }


def evaluate_text(cfg: EvaluateConfig, model_dir: Path, text_file: Path) -> dict[str, Any]:
    """Evaluate any UTF-8 text file, encoded with the model folder's own tokenizer."""
    if not text_file.is_file():
        raise BadInput(f"{text_file}: text file not found")
    try:
        text = text_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{text_file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    _check_model_dir(model_dir)
    tokens = np.asarray(load_tokenizer(model_dir).encode_ordinary(text), dtype=np.int64)
    if tokens.size < 2:
        raise BadInput(f"{text_file}: too short to evaluate ({tokens.size} tokens, need 2)")
    result = evaluate_tokens(cfg, model_dir, tokens)
    return {"model": str(model_dir), "file": str(text_file), **result}


def _check_model_dir(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise BadInput(f"{model_dir}: model folder not found")


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


def run(cfg: EvaluateConfig, shards: Path, models: list[Path], out: Path) -> dict[str, Any]:
    """Evaluate each model on the val split; write {model dir name: metrics} to `out`."""
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise BadInput(f"model folders must have distinct names (keys of {out}): {names}")
    for model_dir in models:
        _check_model_dir(model_dir)
    manifest = read_manifest(shards)
    for model_dir in models:
        _check_matches_shards(model_dir, manifest, shards)
    tokens = load_split(shards, "val").astype(np.int64)
    if tokens.size < 2:
        raise BadInput(f"{shards}: the val split holds {tokens.size} tokens, too few to evaluate")
    metrics = {m.name: evaluate_tokens(cfg, m, tokens, label=f"evaluate {m.name}") for m in models}
    write_json(out, metrics)
    return metrics


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    model: ModelsOption = None,
    text: Annotated[
        Path | None,
        typer.Option(help="Evaluate this UTF-8 text file instead of the val split (one model)."),
    ] = None,
    shards: Annotated[Path, typer.Option(help="Shards folder; its val split is evaluated.")] = (
        layout.SHARDS
    ),
    out: Annotated[Path, typer.Option(help="Metrics JSON written in stage mode.")] = DEFAULT_OUT,
    stride: Annotated[
        int | None, typer.Option(help="Window stride in tokens (overrides evaluate.stride).")
    ] = None,
) -> None:
    """Perplexity (sliding window, window = the model's context) and bits per byte.

    Stage mode: every --model on the shards' val split, written to --out and printed.
    With --text FILE: one model on any text file; prints one JSON object on stdout.
    """
    overrides = [*(set_ or []), *([f"evaluate.stride={stride}"] if stride is not None else [])]
    cfg: EvaluateConfig = section("evaluate", params, overrides)
    if text is not None:
        if model and len(model) > 1:
            raise BadInput("--text evaluates one model: give a single --model")
        result = evaluate_text(cfg, model[0] if model else layout.BASE, text)
    else:
        result = run(cfg, shards, list(model) if model else DEFAULT_MODELS, out)
    print(json.dumps(result, indent=2))
