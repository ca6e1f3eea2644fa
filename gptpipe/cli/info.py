"""`gptpipe info`: what a model folder holds (from its config.json and tokenizer files alone):
architecture, parameter breakdown per group and per block, size on disk, tokenizer, whether it
is a base, instruction-tuned or classifier model, and what it was trained on; or the model a
params file would build. With a batch size and a process count (a params file's pretrain
section gives them), the memory per process that training it needs under ddp and fsdp."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gptpipe import default_paths
from gptpipe.config import (
    ModelConfig,
    PretrainConfig,
    TokenizerConfig,
    build_section,
    human_bytes,
    read_params,
    to_dict,
)
from gptpipe.errors import BadInput
from gptpipe.interop.gpt2_vocab import GPT2_VOCAB
from gptpipe.model.folder import WEIGHTS, read_info
from gptpipe.model.gpt import GPTConfig
from gptpipe.model.params import PARAM_GROUPS, block_breakdown, config_breakdown, head_is_tied
from gptpipe.model.skipped import read_skipped
from gptpipe.options import SetOption
from gptpipe.train.memory import STRATEGIES, training_memory


def model_kind(n_classes: int, meta: dict[str, Any]) -> str:
    """classifier, instruction-tuned or base (pretrained here, or converted GPT-2 weights)."""
    if n_classes:
        return "classifier"
    return "instruction-tuned" if meta.get("stage") == "instruct" else "base"


def trained_on(meta: dict[str, Any]) -> str:
    """One line on the data (or the weights) a model folder came from, from its meta."""
    data = meta.get("data")
    if isinstance(data, dict) and data.get("corpus_sha256"):
        return (
            f"corpus sha256 {str(data['corpus_sha256'])[:16]}..., {data.get('tokens')} tokens, "
            f"{data.get('documents')} documents"
        )
    if isinstance(data, dict) and data.get("sha256"):
        digest = str(data["sha256"])[:16]
        return f"{data.get('file')} (sha256 {digest}..., {data.get('records')} records)"
    if meta.get("stage") == "weights":
        return f"converted from {meta.get('source')} ({meta.get('origin', 'unknown origin')})"
    return "not recorded"


def _tokenizer(model_dir: Path) -> dict[str, Any] | None:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise BadInput(f"{path}: not valid JSON") from None
    return {k: meta.get(k) for k in ("kind", "n_vocab", "pattern", "special_tokens")}


def describe_model(model_dir: Path) -> dict[str, Any]:
    """Architecture, kind, provenance, tokenizer, size and parameter counts of a model folder
    (its config.json and tokenizer.json; the weights are not read)."""
    if not model_dir.is_dir():
        raise BadInput(f"{model_dir}: model folder not found")
    skipped = read_skipped(model_dir)
    if skipped is not None:
        return {"model": str(model_dir), **skipped}
    info = read_info(model_dir)
    weights = model_dir / WEIGHTS
    return {
        "model": str(model_dir),
        "kind": model_kind(info.config.n_classes, info.meta),
        "config": info.config.to_dict(),
        "labels": info.labels,
        "meta": info.meta,
        "trained_on": trained_on(info.meta),
        "tokenizer": _tokenizer(model_dir),
        "weights_bytes": weights.stat().st_size if weights.is_file() else None,
        "size_bytes": sum(p.stat().st_size for p in model_dir.iterdir() if p.is_file()),
        "parameters": config_breakdown(info.config),
        "blocks": block_breakdown(info.config),
    }


BYTE_VOCAB = 257  # the 256 byte values and <|endoftext|>
TOKENIZER_FOLDER = Path("models") / "tokenizer"  # dvc.yaml's paths.tokenizer, beside params.yaml


def _vocabulary(tok_cfg: TokenizerConfig, params: Path) -> tuple[int, str]:
    """(vocabulary, where it comes from) of the model a params file would build.

    gpt2 and byte are fixed; bpe and word are capped by tokenizer.vocab_size (a corpus too
    small for that many gives fewer); char is the corpus's own characters. Where the tokenizer
    stage has already run beside the params file, its folder says exactly.
    """
    kind, vocab_size = tok_cfg.kind, tok_cfg.vocab_size
    subset = kind == "gpt2" and tok_cfg.min_count > 0
    trained = _tokenizer(params.resolve().parent / TOKENIZER_FOLDER)
    folder_kind = "gpt2-subset" if subset else kind
    if trained is not None and trained.get("kind") == folder_kind and trained.get("n_vocab"):
        return int(trained["n_vocab"]), f"from {TOKENIZER_FOLDER}"
    if subset:
        return GPT2_VOCAB, (
            f"GPT-2's tokens the corpus has at least {tok_cfg.min_count} times, not known "
            f"before the tokenizer stage; counted as {GPT2_VOCAB}, an upper bound"
        )
    if kind == "gpt2":
        return GPT2_VOCAB, "GPT-2's"
    if kind == "byte":
        return BYTE_VOCAB, "256 bytes and <|endoftext|>"
    if kind == "char":
        return BYTE_VOCAB, (
            "char: the corpus's characters and <|endoftext|>, not known before the tokenizer "
            f"stage; counted as {BYTE_VOCAB}"
        )
    return vocab_size, "tokenizer.vocab_size, an upper bound"


def describe_memory(config: dict[str, Any], batch_size: int, nproc: int) -> dict[str, Any]:
    """Bytes per process of training the model of `config` (a GPTConfig's dict) with
    `batch_size` sequences per micro-batch in each of `nproc` processes, per strategy."""
    gpt = GPTConfig(**config)
    memory: dict[str, Any] = {"nproc": nproc, "batch_size": batch_size}
    for strategy in STRATEGIES:
        memory[strategy] = training_memory(gpt, batch_size, nproc, strategy).to_dict()
    return memory


def describe_params(
    params: Path, overrides: list[str], batch_size: int | None = None, nproc: int | None = None
) -> dict[str, Any]:
    """The model that `pretrain` would build from a params file (sections model, tokenizer),
    and the memory per process of pretraining it (pretrain.batch_size and pretrain.nproc,
    unless given)."""
    raw = read_params(params, overrides)
    model_cfg: ModelConfig = build_section(raw, "model")
    tok_cfg: TokenizerConfig = build_section(raw, "tokenizer")
    vocab, vocab_source = _vocabulary(tok_cfg, params)
    pretrain: PretrainConfig = build_section(raw, "pretrain")
    config = GPTConfig(vocab_size=vocab, **to_dict(model_cfg))
    batch_size = pretrain.batch_size if batch_size is None else batch_size
    nproc = pretrain.nproc if nproc is None else nproc
    return {
        "params": str(params),
        "config": config.to_dict(),
        "labels": [],
        "meta": {"tokenizer": tok_cfg.kind},
        "vocabulary": vocab_source,
        "weights_bytes": None,
        "parameters": config_breakdown(config),
        "blocks": block_breakdown(config),
        "memory": describe_memory(config.to_dict(), batch_size, nproc),
    }


_MEMORY_ROWS = {
    "weights": "weights (float32)",
    "gradients": "gradients",
    "optimizer": "AdamW moments (2 x float32)",
    "buffers": "ddp: gradient buckets; fsdp: whole at a time",
    "activations": "activations and logits (float32)",
}


def print_memory(memory: dict[str, Any], block_size: int, console: Console) -> None:
    """The memory per process table: a column per strategy."""
    table = Table(
        title=f"Training memory per process: {memory['nproc']} process(es), batch_size "
        f"{memory['batch_size']} x block_size {block_size} each"
    )
    table.add_column("part")
    for strategy in STRATEGIES:
        table.add_column(strategy, justify="right")
    for part, label in _MEMORY_ROWS.items():
        table.add_row(label, *(human_bytes(memory[s][part]) for s in STRATEGIES))
    table.add_section()
    table.add_row("[bold]total[/bold]", *(human_bytes(memory[s]["total"]) for s in STRATEGIES))
    table.add_row(
        "host: fsdp's plain model (on the CPU, add it)",
        *(human_bytes(memory[s]["host"]) for s in STRATEGIES),
    )
    console.print(table)


def print_description(description: dict[str, Any], console: Console) -> None:
    """Print a description as a summary line and a rich table of parameter groups."""
    if description.get("skipped"):
        console.print(f"{escape(description['model'])}: skipped, {escape(description['reason'])}")
        return
    c = description["config"]
    source = description.get("model") or f"{description['params']} (not trained)"
    kind = f" ({description['kind']} model)" if description.get("kind") else ""
    console.print(f"[bold]{escape(source)}[/bold]{kind}")
    console.print(
        f"context {c['block_size']}, {c['n_layer']} layers, {c['n_head']} heads, "
        f"width {c['n_embd']}, vocabulary {c['vocab_size']:,}, dropout {c['dropout']}, "
        f"bias {c['bias']}"
        + (f", classes: {escape(', '.join(description['labels']))}" if c["n_classes"] else "")
    )
    if description.get("vocabulary"):
        kind = description["meta"].get("tokenizer")
        console.print(f"tokenizer {kind}: vocabulary {escape(description['vocabulary'])}")
    stage = description["meta"].get("stage")
    if stage:
        console.print(f"stage {stage}, steps {description['meta'].get('steps', '?')}")
    if description.get("trained_on"):
        console.print(f"trained on: {escape(description['trained_on'])}")
    tok = description.get("tokenizer")
    if tok:
        console.print(f"tokenizer: {tok['kind']}, vocabulary {tok['n_vocab']:,}")
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
    blocks = Table(title="Parameters per block")
    blocks.add_column("part")
    blocks.add_column("parameters", justify="right")
    for part, count in description["blocks"].items():
        blocks.add_row(part, f"{count:,}")
    console.print(blocks)
    if description["weights_bytes"] is not None:
        size = description["size_bytes"] / 2**20
        console.print(
            f"weights file: {description['weights_bytes'] / 2**20:.1f} MiB; folder {size:.1f} MiB"
        )
    if description.get("memory"):
        print_memory(description["memory"], c["block_size"], console)


def command(
    model_dir: Annotated[
        Path | None,
        typer.Argument(help="Model folder to describe (same as --model).", show_default=False),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Model folder to describe (default: models/base).")
    ] = None,
    params: Annotated[
        Path | None,
        typer.Option(help="Describe the model this params file would build instead."),
    ] = None,
    set_: SetOption = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Sequences per micro-batch and process, for the training memory per process "
            "(default: the params file's pretrain.batch_size; a model folder: 1).",
            show_default=False,
        ),
    ] = None,
    nproc: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes training together, for the training memory per process (default: "
            "the params file's pretrain.nproc; a model folder: 1).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show a model's architecture and its parameter count per group (embeddings, attention,
    MLP, layer norms, head) with the total; with --params (or --batch-size / --nproc), also
    the memory per process of training it under ddp and fsdp (pretrain.strategy): weights,
    gradients, AdamW moments, communication buffers, activations."""
    if model_dir is not None and model is not None:
        raise BadInput("give the model folder once: MODEL_DIR or --model")
    model = model if model is not None else model_dir
    if model is not None and params is not None:
        raise BadInput("give --model or --params, not both")
    if set_ and params is None:
        raise BadInput("-S/--set overrides apply to --params only")
    if params is not None:
        description = describe_params(params, set_ or [], batch_size, nproc)
    else:
        description = describe_model(model if model is not None else default_paths.BASE)
        if (batch_size is not None or nproc is not None) and "config" in description:
            memory = describe_memory(description["config"], batch_size or 1, nproc or 1)
            description["memory"] = memory
    if as_json:
        print(json.dumps(description, indent=2))
    else:
        print_description(description, Console())
