"""DVC stage `finetune-classify`: classification fine-tuning with a head on the last token."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from gptpipe import default_paths
from gptpipe.config import ClassifyConfig
from gptpipe.finetune.batches import batches_of, context_length, length_batches
from gptpipe.finetune.classify import (
    ClassifyBatches,
    classify_metrics,
    collate_classify,
    majority_label,
    read_labelled,
    split_figures,
    split_scores,
    text_ids,
)
from gptpipe.finetune.splits import classify_splits
from gptpipe.finetune.trainable import finished, select_trainable, with_epochs
from gptpipe.fsutil import files_sha256, write_json
from gptpipe.metrics import ran_with
from gptpipe.model.folder import WEIGHTS, load_language_model, save_model
from gptpipe.model.gpt import GPT
from gptpipe.model.heads import with_classifier
from gptpipe.options import (
    BaseModelOption,
    CheckpointsOption,
    MetricsOption,
    ModelOutOption,
    ParamsOption,
    PlotsOption,
    RunDetailsOption,
    SetOption,
    section,
)
from gptpipe.outputs import Output, check_paths
from gptpipe.progress import wrote
from gptpipe.runtime import seed_everything, set_threads, tune_allocator
from gptpipe.tokenizer.folder import eot_id
from gptpipe.tokens.sampler import WindowSampler
from gptpipe.train.distributed import Ranks, launched_ranks, process_group, relaunched
from gptpipe.train.loop import TrainResult
from gptpipe.train.losses import classify_loss
from gptpipe.train.outputs import training_outputs
from gptpipe.train.precision import evaluating
from gptpipe.train.recipe import Conclude, Recipe, Staged, TrainingPaths, fit

_DEFAULT_SCORES = Path("reports/classify/scores.json")


@dataclass
class _Data:
    """The labelled records encoded, cut to the longest training text and split."""

    labels: list[str]  # the classes, sorted; a record's label id is its index here
    splits: dict[str, list[tuple[list[int], int]]]  # train / val / test: (ids, label id)
    records: int
    max_length: int


def _read(cfg: ClassifyConfig, data: Path, enc: Any, eot: int, block_size: int) -> _Data:
    records = read_labelled(data)
    labels = sorted({r.label for r in records})
    label_id = {label: i for i, label in enumerate(labels)}
    targets = [label_id[r.label] for r in records]
    fractions = (cfg.val_fraction, cfg.test_fraction)
    splits = classify_splits(targets, labels, cfg.protocol, fractions, cfg.seed, data)
    limit = context_length(cfg.max_length, block_size, "classify.max_length")
    encoded = [text_ids(enc, r.text, limit, eot) for r in records]
    # Truncate every split to the longest training text (the book's protocol).
    max_length = max(len(encoded[int(i)]) for i in splits["train"])
    examples = [(ids[:max_length], target) for ids, target in zip(encoded, targets, strict=True)]
    split = {name: [examples[int(i)] for i in idx] for name, idx in splits.items()}
    return _Data(labels, split, len(records), max_length)


def run(cfg: ClassifyConfig, base: Path, data: Path, paths: TrainingPaths) -> dict[str, Any]:
    """Fine-tune a classifier; write the model (labels in config.json), the headline metrics,
    the curves with the test confusion rows, the per-split and per-class scores
    (`paths.extra`; default: scores.json beside the metrics) and the run details, together.

    Under torchrun every process runs this: each trains on its own slice of every global batch
    (DistributedDataParallel or FSDP, as `cfg.strategy` says), and only rank 0 writes."""
    started = time.perf_counter()
    if paths.extra is None:
        paths = dataclasses.replace(paths, extra=paths.metrics.with_name("scores.json"))
    set_threads(cfg.threads)
    with process_group(cfg) as (ranks, device):
        recipe, conclude = _recipe(cfg, base, data, device, ranks)
        recipe.started = started
        return fit(recipe, paths, conclude)


def _recipe(
    cfg: ClassifyConfig, base: Path, data: Path, device: torch.device, ranks: Ranks
) -> tuple[Recipe, Conclude]:
    """The last token's class on the training split's texts (this rank's slice of each
    global batch), validated on the first val texts (every rank scores the same ones). The
    untuned head's scores, which only the saved outputs use, are rank 0's alone."""
    base_model, enc = load_language_model(base, device)
    eot = eot_id(enc)
    got = _read(cfg, data, enc, eot, base_model.config.block_size)
    collate = functools.partial(collate_classify, pad_id=eot)
    train_set = got.splits["train"]
    sampler = WindowSampler(len(train_set), cfg.batch_size, cfg.seed, ranks.rank, ranks.world_size)
    val_batches = batches_of(
        got.splits["val"][: cfg.eval_batches * cfg.batch_size], cfg.batch_size, collate
    )
    # Whole splits are scored in larger batches of similar lengths (no gradients to hold).
    whole = {
        n: length_batches(items, 4 * cfg.batch_size, collate) for n, items in got.splits.items()
    }
    seed_everything(cfg.seed)
    model = with_classifier(base_model, len(got.labels))
    del base_model
    counts = select_trainable(model, cfg)
    untuned: dict[str, float] = {}
    if ranks.main:  # the untuned head, for comparison (no random numbers drawn)
        with evaluating(model, cfg.dtype):
            untuned = {n: classify_metrics(model, b)[1] for n, b in whole.items()}
    cfg = with_epochs(cfg, len(train_set), ranks.world_size)
    recipe = Recipe(
        stage="classify",
        description="finetune classify",
        cfg=cfg,
        model=model,
        batch_at=lambda i: collate([train_set[j] for j in sampler.indices(i)]),
        loss_of=classify_loss,
        validate=functools.partial(_validate, batches=val_batches),
        checkpoint_key={"base": files_sha256(base / WEIGHTS), "data": files_sha256(data)},
        params=ran_with(classify=cfg),
        device=device,
        language_model=False,
        rank=ranks.rank,
    )
    tuned = _Tuned(model, cfg, got, whole, untuned, counts, sampler, base, data)
    return recipe, functools.partial(_conclude, tuned, ranks.world_size)


def _validate(model: torch.nn.Module, batches: ClassifyBatches) -> dict[str, float]:
    loss, accuracy = classify_metrics(model, batches)
    return {"val_loss": loss, "val_accuracy": accuracy}


@dataclass
class _Tuned:
    """What scoring and saving the tuned classifier needs."""

    model: GPT
    cfg: ClassifyConfig
    got: _Data
    whole: Mapping[str, ClassifyBatches]  # every split, whole
    untuned: dict[str, float]  # the untuned head's accuracy per split
    counts: dict[str, Any]  # trainable and total parameters
    sampler: WindowSampler
    base: Path
    data: Path


def _conclude(tuned: _Tuned, processes: int, result: TrainResult, staged: Staged) -> dict[str, Any]:
    """Score every split with the tuned classifier, save it, its test confusion rows and its
    per-split scores; the stage's own figures (losses and scores over whole splits)."""
    model, cfg, got = finished(tuned.model), tuned.cfg, tuned.got  # LoRA adapters merged
    counts = tuned.counts
    train_labels = [label for _, label in got.splits["train"]]
    with evaluating(model, cfg.dtype):
        per_split, test_rows = split_scores(
            model, tuned.whole, got.labels, train_labels, tuned.untuned
        )
    figures = split_figures(per_split) | counts
    figures |= {f"{name}_records": len(items) for name, items in got.splits.items()}
    figures |= {"max_length": got.max_length}
    figures |= {"epochs": tuned.sampler.epoch(result.steps * cfg.grad_accum)}
    figures |= {"processes": processes}
    meta = {
        "stage": "classify",
        "steps": result.steps,
        "train_loss": result.train_loss,
        "val_accuracy": figures["val_accuracy"],
        "test_accuracy": figures["test_accuracy"],
        "max_length": got.max_length,
        "protocol": cfg.protocol,
        "trainable": cfg.trainable,
        "seed": cfg.seed,
        "data": {"file": tuned.data.name, "sha256": files_sha256(tuned.data)}
        | {"records": got.records},
    }
    save_model(
        staged.model, model.to(torch.device("cpu")), tuned.base, labels=got.labels, meta=meta
    )
    write_json(staged.plots / "confusion.json", test_rows)
    assert staged.extra is not None  # run() always names the scores file
    write_json(
        staged.extra,
        {
            "labels": got.labels,
            "protocol": cfg.protocol,
            "trainable": cfg.trainable,
            "max_length": got.max_length,
            "majority_label": got.labels[majority_label(train_labels)],
            "params": {"trainable": counts["trainable_params"], "total": counts["total_params"]},
            "splits": per_split,
        },
    )
    return figures


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    base: BaseModelOption = default_paths.BASE,
    data: Annotated[
        Path,
        typer.Option(help="Labelled texts: 'label<TAB>text' lines (or CSV, JSON, JSON Lines)."),
    ] = default_paths.CLASSIFY_DATA,
    out: ModelOutOption = default_paths.CLASSIFY_MODEL,
    metrics: MetricsOption = default_paths.METRICS / "classify.json",
    plots: PlotsOption = default_paths.PLOTS / "classify",
    checkpoints: CheckpointsOption = default_paths.CHECKPOINTS / "classify",
    details: RunDetailsOption = default_paths.RUNS / "classify.json",
    scores: Annotated[
        Path,
        typer.Option(
            help="JSON of per-split, per-class scores and confusion matrices (for the report)."
        ),
    ] = _DEFAULT_SCORES,
) -> None:
    """Fine-tune the base model as a classifier (a head on the last token's hidden state).

    Resumes from a compatible checkpoint; Ctrl-C or SIGTERM saves one and exits 130.
    With classify.nproc > 1 it relaunches itself under torchrun (classify.strategy: ddp or
    fsdp); it also runs as is under `torchrun --nproc_per_node N -m gptpipe finetune ...`.
    """
    cfg = section("classify", params, set_)
    outputs = training_outputs(out, metrics, plots, checkpoints, details)
    inputs = [("--params", params), ("--base", base), ("--data", data)]
    check_paths([*outputs, Output("--scores", scores)], inputs)
    tune_allocator()  # keep freed activation memory in the heap: fewer page faults
    if relaunched(cfg):  # classify.nproc processes under torchrun did it (rank 0 said so)
        return
    run(cfg, base, data, TrainingPaths(out, metrics, plots, checkpoints, details, scores))
    if launched_ranks().main:  # under torchrun, the process that wrote them
        wrote("finetune classify", out, metrics, plots, scores, details)
