"""`gptpipe info`: a model's architecture and parameter breakdown (from a folder or params)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gptpipe import layout
from gptpipe.cli.options import SetOption
from gptpipe.config import ModelConfig, TokenizerConfig, build_section, read_params, to_dict
from gptpipe.errors import BadInput
from gptpipe.interop.gpt2_vocab import GPT2_VOCAB
from gptpipe.model.folder import WEIGHTS, read_info
from gptpipe.model.gpt import GPTConfig
from gptpipe.model.params import PARAM_GROUPS, config_breakdown, head_is_tied


def describe_model(model_dir: Path) -> dict[str, Any]:
    """Architecture, labels, provenance and parameter counts of a model folder (config.json)."""
    if not model_dir.is_dir():
        raise BadInput(f"{model_dir}: model folder not found")
    info = read_info(model_dir)
    weights = model_dir / WEIGHTS
    return {
        "model": str(model_dir),
        "config": info.config.to_dict(),
        "labels": info.labels,
        "meta": info.meta,
        "weights_bytes": weights.stat().st_size if weights.is_file() else None,
        "parameters": config_breakdown(info.config),
    }


def describe_params(params: Path, overrides: list[str]) -> dict[str, Any]:
    """The model that `pretrain` would build from a params file (sections model, tokenizer).

    For tokenizer.kind=bpe the vocabulary is tokenizer.vocab_size, an upper bound: a corpus
    too small for that many merges gives a smaller tokenizer.
    """
    raw = read_params(params, overrides)
    model_cfg: ModelConfig = build_section(raw, "model")
    tok_cfg: TokenizerConfig = build_section(raw, "tokenizer")
    vocab = GPT2_VOCAB if tok_cfg.kind == "gpt2" else tok_cfg.vocab_size
    config = GPTConfig(vocab_size=vocab, **to_dict(model_cfg))
    return {
        "params": str(params),
        "config": config.to_dict(),
        "labels": [],
        "meta": {"tokenizer": tok_cfg.kind},
        "weights_bytes": None,
        "parameters": config_breakdown(config),
    }


def print_description(description: dict[str, Any], console: Console) -> None:
    """Print a description as a summary line and a rich table of parameter groups."""
    c = description["config"]
    source = description.get("model") or f"{description['params']} (not trained)"
    console.print(f"[bold]{escape(source)}[/bold]")
    console.print(
        f"context {c['block_size']}, {c['n_layer']} layers, {c['n_head']} heads, "
        f"width {c['n_embd']}, vocabulary {c['vocab_size']:,}, dropout {c['dropout']}, "
        f"bias {c['bias']}"
        + (f", classes: {escape(', '.join(description['labels']))}" if c["n_classes"] else "")
    )
    stage = description["meta"].get("stage")
    if stage:
        console.print(f"stage {stage}, steps {description['meta'].get('steps', '?')}")
    counts = description["parameters"]
    total = counts["total"]
    table = Table(title="Parameters")
    table.add_column("group")
    table.add_column("parameters", justify="right")
    table.add_column("share", justify="right")
    tied = head_is_tied(GPTConfig(**c))
    for group, label in PARAM_GROUPS.items():
        if group == "head" and tied:
            table.add_row(label, "tied to embeddings", "")
            continue
        table.add_row(label, f"{counts[group]:,}", f"{100 * counts[group] / total:.1f}%")
    table.add_section()
    table.add_row("[bold]total[/bold]", f"[bold]{total:,}[/bold]", "100.0%")
    console.print(table)
    if description["weights_bytes"] is not None:
        console.print(f"weights file: {description['weights_bytes'] / 2**20:.1f} MiB")


def command(
    model: Annotated[
        Path | None, typer.Option(help="Model folder to describe (default: models/base).")
    ] = None,
    params: Annotated[
        Path | None,
        typer.Option(help="Describe the model this params file would build instead."),
    ] = None,
    set_: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show a model's architecture and its parameter count per group (embeddings, attention,
    MLP, layer norms, head) with the total."""
    if model is not None and params is not None:
        raise BadInput("give --model or --params, not both")
    if set_ and params is None:
        raise BadInput("-S/--set overrides apply to --params only")
    if params is not None:
        description = describe_params(params, set_ or [])
    else:
        description = describe_model(model if model is not None else layout.BASE)
    if as_json:
        print(json.dumps(description, indent=2))
    else:
        print_description(description, Console())
