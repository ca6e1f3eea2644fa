"""DVC stage `pretrain`: next-token pretraining of a GPT-2 model from scratch on the shards."""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from gptpipe import default_paths
from gptpipe.config import (
    BaseConfig,
    ModelConfig,
    PretrainConfig,
    gpt_params,
    require_fits,
    to_dict,
)
from gptpipe.errors import BadInput
from gptpipe.fsutil import staged_outputs, write_json
from gptpipe.metrics import ran_with, wall_seconds
from gptpipe.model.folder import save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.model.skipped import write_skipped
from gptpipe.options import (
    CheckpointsOption,
    MetricsOption,
    ModelOutOption,
    ParamsOption,
    PlotsOption,
    RunDetailsOption,
    SetOption,
    section,
)
from gptpipe.outputs import check_paths
from gptpipe.progress import wrote
from gptpipe.runtime import seed_everything, set_threads, tune_allocator
from gptpipe.tokenizer.folder import tokenizer_hash
from gptpipe.tokens.sampler import WindowSampler, spread
from gptpipe.tokens.shards import TokenWindows, read_manifest
from gptpipe.train.distributed import Ranks, launched_ranks, process_group, relaunched
from gptpipe.train.loop import TrainResult
from gptpipe.train.losses import lm_loss, masked_lm_loss
from gptpipe.train.memory import training_memory
from gptpipe.train.outputs import training_outputs
from gptpipe.train.recipe import Conclude, Recipe, Staged, TrainingPaths, fit


def run(
    model_cfg: ModelConfig,
    cfg: PretrainConfig,
    shards: Path,
    tokenizer_dir: Path,
    paths: TrainingPaths,
) -> dict[str, Any]:
    """Pretrain from scratch; write the model folder, the headline metrics, the loss curves
    and the run details (`paths`; `paths.extra` unused), together.

    Under torchrun every process runs this: each trains on its own slice of every global batch
    (DistributedDataParallel or FSDP, as `cfg.strategy` says), and only rank 0 writes.
    """
    started = time.perf_counter()
    set_threads(cfg.threads)
    with process_group(cfg) as (ranks, device):
        recipe, conclude = _recipe(model_cfg, cfg, shards, tokenizer_dir, device, ranks)
        recipe.started = started
        return fit(recipe, paths, conclude)


def _recipe(
    model_cfg: ModelConfig,
    cfg: PretrainConfig,
    shards: Path,
    tokenizer_dir: Path,
    device: torch.device,
    ranks: Ranks,
) -> tuple[Recipe, Conclude]:
    """Next-token prediction on the train split's windows (this rank's slice of each global
    batch), validated on fixed val windows."""
    manifest = read_manifest(shards)
    tok_hash = tokenizer_hash(tokenizer_dir)
    if manifest["tokenizer_hash"] != tok_hash:
        raise BadInput(
            f"{shards / 'manifest.json'}: tokenizer_hash {manifest['tokenizer_hash'][:12]}... "
            f"differs from the tokenizer in {tokenizer_dir} ({tok_hash[:12]}...); "
            "rerun `gptpipe shard` with this tokenizer"
        )
    windows = {s: TokenWindows(shards, s, model_cfg.block_size) for s in ("train", "val")}
    # the same val windows whatever the number of processes (each rank scores all of them)
    scored = cfg.eval_batches * cfg.batch_size * ranks.world_size
    val_batches = [
        windows["val"].get_batch(indices)
        for indices in spread(len(windows["val"]), scored, cfg.batch_size)
    ]
    sampler = WindowSampler(
        len(windows["train"]), cfg.batch_size, cfg.seed, ranks.rank, ranks.world_size
    )
    vocab_size = int(manifest["vocab_size"])
    _check_training_fits(model_cfg, cfg, vocab_size, device, ranks.world_size)
    seed_everything(cfg.seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, **to_dict(model_cfg))).to(device)
    params = ran_with(pretrain=cfg)
    params["params"]["model"] = model.config.to_dict()  # the model section + the vocabulary
    manifest_hash = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    recipe = Recipe(
        stage="pretrain",
        description="pretrain",
        cfg=cfg,
        model=model,
        batch_at=lambda i: windows["train"].get_batch(sampler.indices(i)),
        loss_of=lm_loss,
        validate=lambda m: {"val_loss": masked_lm_loss(m, val_batches)},
        checkpoint_key={"model": model.config.to_dict(), "shards": manifest_hash}
        | {"tokenizer": tok_hash},
        params=params,
        device=device,
        rank=ranks.rank,
    )
    trained = _Trained(model, cfg, manifest, tokenizer_dir, len(windows["train"]), sampler)
    return recipe, functools.partial(_conclude, trained, ranks.world_size)


@dataclass
class _Trained:
    """What the finished model is saved with: what it was trained on, and how much."""

    model: GPT
    cfg: PretrainConfig
    manifest: dict[str, Any]
    tokenizer_dir: Path
    train_windows: int
    sampler: WindowSampler


def _conclude(
    trained: _Trained, processes: int, result: TrainResult, staged: Staged
) -> dict[str, Any]:
    """Save the pretrained model (its meta: the data it saw, `gptpipe info` shows it); the
    stage's own figures."""
    model, manifest = trained.model, trained.manifest
    meta = {
        "stage": "pretrain",
        "steps": result.steps,
        "tokens": result.tokens,
        "train_loss": result.train_loss,
        "val_loss": result.val["val_loss"],
        "seed": trained.cfg.seed,
        "data": {k: manifest.get(k) for k in ("corpus_sha256", "corpus_bytes", "documents")}
        | {"tokens": manifest.get("tokens")},
    }
    save_model(staged.model, model.to(torch.device("cpu")), trained.tokenizer_dir, meta=meta)
    return {
        "params_total": model.num_params(non_embedding=False),
        "params_non_embedding": model.num_params(non_embedding=True),
        "train_windows": trained.train_windows,
        "epochs": trained.sampler.epoch(result.steps * trained.cfg.grad_accum),
        "processes": processes,
        "stopped_early": result.stopped_early,
    }


def _check_training_fits(
    model_cfg: ModelConfig,
    cfg: PretrainConfig,
    vocab_size: int,
    device: torch.device,
    processes: int,
    available: int | None = None,
) -> None:
    """Refuse, before building anything, a model and batch whose training cannot fit in the
    device's memory (`available`; default: the GPU's, or the host's on the CPU): on CUDA one
    process's share (`training_memory` under `cfg.strategy`: fsdp's shards, so a model that
    fits only sharded is not refused), on the CPU every process's together (fsdp's host copy
    of the model included)."""
    config = GPTConfig(vocab_size=vocab_size, **to_dict(model_cfg))
    need = training_memory(config, cfg.batch_size, processes, cfg.strategy).on(device.type)
    per = ""
    if device.type == "cuda":
        if available is None:
            available = torch.cuda.get_device_properties(device).total_memory
        if processes > 1:
            per = f" in each of {processes} processes ({cfg.strategy})"
    elif processes > 1:
        need *= processes  # they share the host's memory
        per = f" in {processes} processes ({cfg.strategy}) together"
    params = gpt_params(model_cfg, vocab_size)
    require_fits(
        "pretrain.batch_size",
        need,
        f"training {params:,} parameters (vocabulary {vocab_size:,}) at batch_size "
        f"{cfg.batch_size} x block_size {model_cfg.block_size}{per}",
        available,
    )


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
    ] = default_paths.SHARDS,
    tokenizer: Annotated[
        Path, typer.Option(help="Tokenizer folder the shards were made with.")
    ] = default_paths.TOKENIZER,
    out: ModelOutOption = default_paths.PRETRAIN,
    metrics: MetricsOption = default_paths.METRICS / "pretrain.json",
    plots: PlotsOption = default_paths.PLOTS / "pretrain",
    checkpoints: CheckpointsOption = default_paths.CHECKPOINTS / "pretrain",
    details: RunDetailsOption = default_paths.RUNS / "pretrain.json",
) -> None:
    """Pretrain a GPT-2 model from scratch on the token shards (next-token prediction).

    Resumes from a compatible checkpoint; Ctrl-C or SIGTERM saves one and exits 130.
    With pretrain.nproc > 1 it relaunches itself under torchrun (pretrain.strategy: ddp or fsdp);
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
    if relaunched(cfg):  # pretrain.nproc processes under torchrun did it (rank 0 said so)
        return
    run(model_cfg, cfg, shards, tokenizer, TrainingPaths(out, metrics, plots, checkpoints, details))
    if launched_ranks().rank == 0:  # under torchrun, the process that wrote them
        wrote("pretrain", out, metrics, plots, details)
