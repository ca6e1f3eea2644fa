"""DVC stage `finetune-classify`: classification fine-tuning with a head on the last token."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from gptpipe import layout
from gptpipe.cli.options import (
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
from gptpipe.config import ClassifyConfig
from gptpipe.errors import BadInput
from gptpipe.finetune.batches import batches_of, context_length, length_batches
from gptpipe.finetune.classify import (
    classify_metrics,
    collate_classify,
    majority_accuracy,
    majority_label,
    predict,
    read_labelled,
    scores,
    text_ids,
)
from gptpipe.finetune.splits import CLASSIFY_SPLITS, balanced_split, stratified_split
from gptpipe.finetune.trainable import finished, select_trainable, with_epochs
from gptpipe.fsutil import files_sha256, staged_outputs, write_json
from gptpipe.metrics import headline, ran_with, wall_seconds, write_metrics
from gptpipe.model.folder import WEIGHTS, load_language_model, save_model
from gptpipe.model.heads import with_classifier
from gptpipe.outputs import Output, check_paths
from gptpipe.progress import wrote
from gptpipe.runtime import seed_everything, set_threads, tune_allocator
from gptpipe.tokenizer.folder import eot_id
from gptpipe.tokens.sampler import WindowSampler
from gptpipe.train.distributed import training_device
from gptpipe.train.loop import TrainResult, train
from gptpipe.train.losses import classify_loss
from gptpipe.train.outputs import training_outputs
from gptpipe.train.precision import evaluating

_DEFAULT_SCORES = Path("reports/classify/scores.json")


def _split_records(
    targets: list[int], labels: list[str], cfg: ClassifyConfig, data: Path
) -> dict[str, np.ndarray]:
    """The train / val / test indices of the protocol; every split non-empty, and every class
    in the training and the test split."""
    cut = balanced_split if cfg.protocol == "balanced" else stratified_split
    parts = cut(targets, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    splits = dict(zip(CLASSIFY_SPLITS, parts, strict=True))
    for name, indices in splits.items():
        if len(indices) == 0:
            raise BadInput(
                f"{data}: {len(targets)} records leave the {name} split empty; add records or "
                f"change classify.val_fraction / classify.test_fraction"
            )
    for name in ("train", "test"):
        present = {targets[int(i)] for i in splits[name]}
        for c, label in enumerate(labels):
            if c not in present:
                count = targets.count(c)
                raise BadInput(
                    f"{data}: class {label!r} ({count} records) is absent from the {name} "
                    f"split; add records of it or change classify.test_fraction"
                )
    return splits


def run(
    cfg: ClassifyConfig,
    base: Path,
    data: Path,
    out: Path,
    metrics_path: Path,
    plots: Path,
    checkpoints: Path | None = None,
    details: Path | None = None,
    scores_path: Path | None = None,
) -> dict[str, Any]:
    """Fine-tune a classifier; write the model (labels in config.json), the headline metrics,
    per-class details (`scores_path`; default: scores.json beside the metrics), the test
    confusion plot and the curves."""
    started = time.perf_counter()
    scores_path = scores_path or metrics_path.with_name("scores.json")
    set_threads(cfg.threads)
    device = training_device(cfg)
    records = read_labelled(data)
    labels = sorted({r.label for r in records})
    label_id = {label: i for i, label in enumerate(labels)}
    targets = [label_id[r.label] for r in records]
    splits = _split_records(targets, labels, cfg, data)
    base_model, enc = load_language_model(base, device)
    eot = eot_id(enc)
    block_size = base_model.config.block_size
    limit = context_length(cfg.max_length, block_size, "classify.max_length")
    encoded = [text_ids(enc, r.text, limit, eot) for r in records]
    # Truncate every split to the longest training text (the book's protocol).
    max_length = max(len(encoded[int(i)]) for i in splits["train"])
    examples = [
        (ids[:max_length], label_id[r.label]) for ids, r in zip(encoded, records, strict=True)
    ]
    split_examples = {name: [examples[int(i)] for i in idx] for name, idx in splits.items()}

    def collate(batch: Any) -> tuple[torch.Tensor, ...]:
        return collate_classify(batch, eot)

    train_set = split_examples["train"]
    sampler = WindowSampler(len(train_set), cfg.batch_size, cfg.seed)
    val_set = split_examples["val"][: cfg.eval_batches * cfg.batch_size]
    val_batches = batches_of(val_set, cfg.batch_size, collate)
    # Whole splits are scored in larger batches of similar lengths (no gradients to hold).
    split_batches = {
        n: length_batches(items, 4 * cfg.batch_size, collate) for n, items in split_examples.items()
    }

    def validate(model: torch.nn.Module) -> dict[str, float]:
        loss, accuracy = classify_metrics(model, val_batches)
        return {"val_loss": loss, "val_accuracy": accuracy}

    seed_everything(cfg.seed)
    model = with_classifier(base_model, len(labels))
    del base_model
    counts = select_trainable(model, cfg)
    with evaluating(model, cfg.dtype):  # the untuned head, for comparison
        untuned = {n: classify_metrics(model, b)[1] for n, b in split_batches.items()}
    cfg = with_epochs(cfg, len(train_set))
    # The model, metrics, curves (written while training runs), scores and run details appear
    # together or not at all: all go to staged paths, renamed in together at the end.
    outputs = [out, metrics_path, plots, scores_path] + ([details] if details is not None else [])
    with staged_outputs(*outputs) as staged:
        new_out, new_metrics, new_plots, new_scores = staged[:4]
        new_details = staged[4] if details is not None else None
        result = train(
            model,
            cfg,
            batch_at=lambda i: collate([train_set[j] for j in sampler.indices(i)]),
            loss_of=classify_loss,
            validate=validate,
            plot_dir=new_plots,
            checkpoint_dir=checkpoints,
            checkpoint_key={"base": files_sha256(base / WEIGHTS), "data": files_sha256(data)},
            description="finetune classify",
        )
        model = finished(model)  # LoRA adapters merged: a plain classifier
        metrics, scores_record, meta, test_rows = _results(
            model, cfg, result, labels, split_examples, split_batches, untuned, counts,
            max_length, sampler, data, len(records),
        )  # fmt: skip
        save_model(new_out, model.to(torch.device("cpu")), base, labels=labels, meta=meta)
        write_json(new_plots / "confusion.json", test_rows)
        write_json(new_scores, scores_record)
        metrics["wall_seconds"] = wall_seconds(started)  # a run detail, not a headline metric
        metrics["device"] = str(device)
        record = metrics | ran_with(classify=cfg)
        write_metrics(new_metrics, headline("classify", metrics), new_details, record)
    return metrics


def _results(
    model: torch.nn.Module,
    cfg: ClassifyConfig,
    result: TrainResult,
    labels: list[str],
    split_examples: dict[str, list[tuple[list[int], int]]],
    split_batches: dict[str, list[tuple]],
    untuned: dict[str, float],
    counts: dict[str, int],
    max_length: int,
    sampler: WindowSampler,
    data: Path,
    n_records: int,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[dict[str, str]]]:
    """The metrics, the per-split scores record, the model folder's meta and the test split's
    (actual, predicted) rows, from losses and scores over whole splits (they replace the
    sampled validation's)."""
    train_set = split_examples["train"]
    metrics: dict[str, Any] = result.metrics(perplexity=False)
    train_labels = [label for _, label in train_set]
    per_split: dict[str, dict[str, Any]] = {}
    test_rows: list[dict[str, str]] = []
    with evaluating(model, cfg.dtype):
        for name, batches in split_batches.items():
            loss, predicted, actual = predict(model, batches)
            split_scores = scores(actual, predicted, labels)
            baseline = majority_accuracy(train_labels, actual.tolist())
            per_split[name] = {
                "records": len(actual),
                "loss": loss,
                **split_scores,
                "majority_baseline": baseline,
                "untuned_accuracy": untuned[name],
            }
            metrics[f"{name}_accuracy"] = split_scores["accuracy"]
            metrics[f"{name}_macro_f1"] = split_scores["macro"]["f1"]
            if name != "train":
                metrics[f"{name}_loss"] = loss
            if name == "test":
                test_rows = [
                    {"actual": labels[a], "predicted": labels[p]}
                    for a, p in zip(actual.tolist(), predicted.tolist(), strict=True)
                ]
    test = per_split["test"]
    metrics |= {
        "test_macro_precision": test["macro"]["precision"],
        "test_macro_recall": test["macro"]["recall"],
        **{f"untuned_{name}_accuracy": untuned[name] for name in CLASSIFY_SPLITS},
        **{
            f"majority_baseline_{name}": per_split[name]["majority_baseline"]
            for name in CLASSIFY_SPLITS
        },
        **counts,
        **{f"{name}_records": len(items) for name, items in split_examples.items()},
        "max_length": max_length,
        "epochs": sampler.epoch(result.steps * cfg.grad_accum),
    }
    scores_record = {
        "labels": labels,
        "protocol": cfg.protocol,
        "trainable": cfg.trainable,
        "max_length": max_length,
        "majority_label": labels[majority_label(train_labels)],
        "params": {"trainable": counts["trainable_params"], "total": counts["total_params"]},
        "splits": per_split,
    }
    meta = {
        "stage": "classify",
        "steps": result.steps,
        "train_loss": result.train_loss,
        "val_accuracy": metrics["val_accuracy"],
        "test_accuracy": metrics["test_accuracy"],
        "max_length": max_length,
        "protocol": cfg.protocol,
        "trainable": cfg.trainable,
        "seed": cfg.seed,
        "data": {"file": data.name, "sha256": files_sha256(data), "records": n_records},
    }
    return metrics, scores_record, meta, test_rows


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    base: BaseModelOption = layout.BASE,
    data: Annotated[
        Path,
        typer.Option(help="Labelled texts: 'label<TAB>text' lines (or CSV, JSON, JSON Lines)."),
    ] = layout.CLASSIFY_DATA,
    out: ModelOutOption = layout.CLASSIFY_MODEL,
    metrics: MetricsOption = layout.METRICS / "classify.json",
    plots: PlotsOption = layout.PLOTS / "classify",
    checkpoints: CheckpointsOption = layout.CHECKPOINTS / "classify",
    details: RunDetailsOption = layout.RUNS / "classify.json",
    scores: Annotated[
        Path,
        typer.Option(
            help="JSON of per-split, per-class scores and confusion matrices (for the report)."
        ),
    ] = _DEFAULT_SCORES,
) -> None:
    """Fine-tune the base model as a classifier (a head on the last token's hidden state).

    Resumes from a compatible checkpoint; Ctrl-C or SIGTERM saves one and exits 130.
    """
    cfg = section("classify", params, set_)
    outputs = training_outputs(out, metrics, plots, checkpoints, details)
    inputs = [("--params", params), ("--base", base), ("--data", data)]
    check_paths([*outputs, Output("--scores", scores)], inputs)
    tune_allocator()  # keep freed activation memory in the heap: fewer page faults
    run(cfg, base, data, out, metrics, plots, checkpoints, details, scores)
    wrote("finetune classify", out, metrics, plots, scores, details)
