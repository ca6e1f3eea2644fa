"""DVC stage `pretrain`: next-token pretraining of a GPT-2 model from scratch on the shards."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from gptpipe import layout
from gptpipe.cli.options import (
    CheckpointsOption,
    MetricsOption,
    ModelOutOption,
    ParamsOption,
    PlotsOption,
    RunDetailsOption,
    SetOption,
    section,
)
from gptpipe.config import (
    BaseConfig,
    ModelConfig,
    PretrainConfig,
    gpt_params,
    require_fits,
    to_dict,
    training_bytes,
)
from gptpipe.errors import BadInput
from gptpipe.fsutil import staged_outputs, write_json
from gptpipe.metrics import headline, ran_with, wall_seconds, write_metrics
from gptpipe.model.folder import save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.model.skipped import write_skipped
from gptpipe.outputs import check_paths
from gptpipe.progress import wrote
from gptpipe.runtime import seed_everything, set_threads, tune_allocator
from gptpipe.tokenizer.folder import tokenizer_hash
from gptpipe.tokens.sampler import WindowSampler, spread
from gptpipe.tokens.shards import TokenWindows, read_manifest
from gptpipe.train.distributed import (
    close_distributed,
    init_distributed,
    launched_ranks,
    relaunch,
    training_device,
)
from gptpipe.train.loop import train
from gptpipe.train.losses import lm_loss, masked_lm_loss
from gptpipe.train.outputs import training_outputs


def run(
    model_cfg: ModelConfig,
    cfg: PretrainConfig,
    shards: Path,
    tokenizer_dir: Path,
    out: Path,
    metrics_path: Path,
    plots: Path,
    checkpoints: Path | None = None,
    details: Path | None = None,
) -> dict[str, Any]:
    """Pretrain from scratch; write the model folder, metrics JSON (headline metrics; the
    run's details such as seconds and device to `details`) and loss curves.

    Under torchrun every process runs this: each trains on its own slice of every global batch
    (DistributedDataParallel), and only rank 0 writes the outputs.
    """
    started = time.perf_counter()
    set_threads(cfg.threads)
    # asking for CUDA without one is bad input, before joining a group
    ranks, device = init_distributed(training_device(cfg))
    try:
        return _run(
            model_cfg,
            cfg,
            shards,
            tokenizer_dir,
            out,
            metrics_path,
            plots,
            checkpoints,
            details,
            ranks.rank,
            ranks.world_size,
            device,
            started,
        )
    finally:
        close_distributed()


def _run(
    model_cfg: ModelConfig,
    cfg: PretrainConfig,
    shards: Path,
    tokenizer_dir: Path,
    out: Path,
    metrics_path: Path,
    plots: Path,
    checkpoints: Path | None,
    details: Path | None,
    rank: int,
    world_size: int,
    device: torch.device,
    started: float,
) -> dict[str, Any]:
    manifest = read_manifest(shards)
    tok_hash = tokenizer_hash(tokenizer_dir)
    if manifest["tokenizer_hash"] != tok_hash:
        raise BadInput(
            f"{shards / 'manifest.json'}: tokenizer_hash {manifest['tokenizer_hash'][:12]}... "
            f"differs from the tokenizer in {tokenizer_dir} ({tok_hash[:12]}...); "
            "rerun `gptpipe shard` with this tokenizer"
        )
    train_windows = TokenWindows(shards, "train", model_cfg.block_size)
    val_windows = TokenWindows(shards, "val", model_cfg.block_size)
    global_batch = cfg.batch_size * world_size
    val_batches = [
        val_windows.get_batch(indices)
        # the same windows whatever the number of processes (each rank scores all of them)
        for indices in spread(len(val_windows), cfg.eval_batches * global_batch, cfg.batch_size)
    ]
    sampler = WindowSampler(len(train_windows), cfg.batch_size, cfg.seed, rank, world_size)

    vocab_size = int(manifest["vocab_size"])
    _check_training_fits(model_cfg, cfg, vocab_size, device)
    seed_everything(cfg.seed)
    config = GPTConfig(vocab_size=vocab_size, **to_dict(model_cfg))
    model = GPT(config).to(device)
    manifest_hash = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    # The model, metrics and curves appear together or not at all: rank 0 writes them to
    # temporary paths (the curves too, while training runs) and renames them in at the end.
    targets = [out, metrics_path, plots] + ([details] if details is not None else [])
    with _outputs(rank, *targets) as staged:
        new_out, new_metrics, new_plots = staged[:3]
        return _train_and_write(
            model, cfg, train_windows, val_windows, sampler, val_batches, manifest,
            manifest_hash, tok_hash, tokenizer_dir, checkpoints, rank, world_size, device,
            new_out, new_metrics, new_plots, staged[3] if details is not None else None,
            started,
        )  # fmt: skip


@contextlib.contextmanager
def _outputs(rank: int, *paths: Path) -> Iterator[list[Path]]:
    """Staged output paths on rank 0 (committed together on success); other ranks write
    nothing and get the paths as they are."""
    if rank != 0:
        yield list(paths)
        return
    with staged_outputs(*paths) as staged:
        yield staged


def _check_training_fits(
    model_cfg: ModelConfig, cfg: PretrainConfig, vocab_size: int, device: torch.device
) -> None:
    """Refuse, before building anything, a model and batch whose training cannot fit in the
    device's memory (host memory on the CPU, the GPU's on CUDA)."""
    need = training_bytes(model_cfg, vocab_size, cfg.batch_size)
    available = None
    if device.type == "cuda":
        available = torch.cuda.get_device_properties(device).total_memory
    params = gpt_params(model_cfg, vocab_size)
    require_fits(
        "pretrain.batch_size",
        need,
        f"training {params:,} parameters (vocabulary {vocab_size:,}) at batch_size "
        f"{cfg.batch_size} x block_size {model_cfg.block_size}",
        available,
    )


def _train_and_write(
    model: GPT,
    cfg: PretrainConfig,
    train_windows: TokenWindows,
    val_windows: TokenWindows,
    sampler: WindowSampler,
    val_batches: list[Any],
    manifest: dict[str, Any],
    manifest_hash: str,
    tok_hash: str,
    tokenizer_dir: Path,
    checkpoints: Path | None,
    rank: int,
    world_size: int,
    device: torch.device,
    out: Path,
    metrics_path: Path,
    plots: Path,
    details: Path | None,
    started: float,
) -> dict[str, Any]:
    config = model.config
    result = train(
        model,
        cfg,
        batch_at=lambda i: train_windows.get_batch(sampler.indices(i)),
        loss_of=lm_loss,
        validate=lambda m: {"val_loss": masked_lm_loss(m, val_batches)},
        plot_dir=plots,
        checkpoint_dir=checkpoints,
        checkpoint_key={"model": config.to_dict(), "shards": manifest_hash, "tokenizer": tok_hash},
        description="pretrain",
    )
    val_loss = result.val["val_loss"]
    metrics = result.metrics() | {
        "params_total": model.num_params(non_embedding=False),
        "params_non_embedding": model.num_params(non_embedding=True),
        "train_windows": len(train_windows),
        "epochs": sampler.epoch(result.steps * cfg.grad_accum),
        "device": str(device),
        "processes": world_size,
        "stopped_early": result.stopped_early,
    }
    meta = {
        "stage": "pretrain",
        "steps": result.steps,
        "tokens": result.tokens,
        "train_loss": result.train_loss,
        "val_loss": val_loss,
        "seed": cfg.seed,
        # what it was trained on (`gptpipe info` shows it)
        "data": {k: manifest.get(k) for k in ("corpus_sha256", "corpus_bytes", "documents")}
        | {"tokens": manifest.get("tokens")},
    }
    if rank == 0:
        save_model(out, model.to(torch.device("cpu")), tokenizer_dir, meta=meta)
        metrics["wall_seconds"] = wall_seconds(started)  # from start to all but this written
        record = metrics | ran_with(pretrain=cfg)
        record["params"]["model"] = config.to_dict()  # the model section + the vocabulary
        write_metrics(metrics_path, headline("pretrain", metrics), details, record)
    return metrics


# Header rows of the curves, so the declared DVC plots exist (empty) when nothing was trained.
_CURVE_HEADERS = {
    "train.csv": "step,train_loss,lr,tokens_per_s,grad_norm\n",
    "val.csv": "step,val_loss\n",
}


def _skip(
    base: BaseConfig, out: Path, metrics_path: Path, plots: Path, details: Path | None
) -> str:
    """Write the outputs of a stage that trains nothing because `base.source` is not pretrain:
    a skipped marker in place of the model folder, empty metrics, header-only curves and run
    details saying why. Returns what to say of it."""
    started = time.perf_counter()
    reason = f"base.source is {base.source!r}: the base model comes from there"
    targets = [out, metrics_path, plots] + ([details] if details is not None else [])
    with staged_outputs(*targets) as staged:  # all of them together, as after training
        new_out, new_metrics, new_plots = staged[:3]
        write_skipped(new_out, "pretrain", reason, base_source=base.source)
        new_plots.mkdir(mode=0o755)
        for name, header in _CURVE_HEADERS.items():
            (new_plots / name).write_text(header, encoding="utf-8")
        write_json(new_metrics, {})
        if details is not None:
            record = {"skipped": True, "reason": reason, "base_source": base.source}
            write_json(staged[3], record | {"wall_seconds": wall_seconds(started)})
    return f"skipped, nothing trained ({reason})"


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    shards: Annotated[
        Path, typer.Option(help="Token shards folder (gptpipe shard).")
    ] = layout.SHARDS,
    tokenizer: Annotated[
        Path, typer.Option(help="Tokenizer folder the shards were made with.")
    ] = layout.TOKENIZER,
    out: ModelOutOption = layout.PRETRAIN,
    metrics: MetricsOption = layout.METRICS / "pretrain.json",
    plots: PlotsOption = layout.PLOTS / "pretrain",
    checkpoints: CheckpointsOption = layout.CHECKPOINTS / "pretrain",
    details: RunDetailsOption = layout.RUNS / "pretrain.json",
) -> None:
    """Pretrain a GPT-2 model from scratch on the token shards (next-token prediction).

    Resumes from a compatible checkpoint; Ctrl-C or SIGTERM saves one and exits 130.
    With pretrain.nproc > 1 it relaunches itself under torchrun (DistributedDataParallel);
    it also runs as is under `torchrun --nproc_per_node N -m gptpipe pretrain ...`.
    """
    model_cfg = section("model", params, set_)
    cfg = section("pretrain", params, set_)
    base: BaseConfig = section("base", params, set_)  # only base.source is read (see dvc.yaml)
    outputs = training_outputs(out, metrics, plots, checkpoints, details)
    check_paths(outputs, [("--params", params), ("--shards", shards), ("--tokenizer", tokenizer)])
    if base.source != "pretrain":
        said = _skip(base, out, metrics, plots, details)
        wrote("pretrain", out, metrics, plots, details, summary=said)
        return
    tune_allocator()
    if cfg.nproc > 1 and launched_ranks().world_size == 1:
        status = relaunch(cfg.nproc)
        if status == 130 or status < 0:
            raise KeyboardInterrupt
        if status != 0:
            raise typer.Exit(status)
        return
    run(model_cfg, cfg, shards, tokenizer, out, metrics, plots, checkpoints, details)
    if launched_ranks().rank == 0:  # under torchrun, the process that wrote them
        wrote("pretrain", out, metrics, plots, details)
