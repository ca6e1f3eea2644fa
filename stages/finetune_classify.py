"""DVC stage `finetune-classify`: classification fine-tuning with a head on the last token."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    SetOption,
    section,
)
from gptpipe.config import ClassifyConfig
from gptpipe.errors import BadInput
from gptpipe.finetune.batches import batches_of, context_length, encode
from gptpipe.finetune.classify import (
    classify_metrics,
    collate_classify,
    majority_accuracy,
    read_labelled,
)
from gptpipe.finetune.splits import CLASSIFY_SPLITS, stratified_split
from gptpipe.fsutil import files_sha256, write_json
from gptpipe.model.folder import WEIGHTS, load_language_model, save_model
from gptpipe.model.heads import with_classifier
from gptpipe.runtime import seed_everything, set_threads, tune_allocator
from gptpipe.tokenizer.folder import eot_id
from gptpipe.tokens.sampler import WindowSampler
from gptpipe.train.distributed import training_device
from gptpipe.train.loop import train
from gptpipe.train.losses import classify_loss
from gptpipe.train.precision import evaluating


def run(
    cfg: ClassifyConfig,
    base: Path,
    data: Path,
    out: Path,
    metrics_path: Path,
    plots: Path,
    checkpoints: Path | None = None,
) -> dict[str, Any]:
    """Fine-tune a classifier; write the model (labels in config.json), metrics and curves."""
    set_threads(cfg.threads)
    device = training_device(cfg)
    records = read_labelled(data)
    labels = sorted({r.label for r in records})
    label_id = {label: i for i, label in enumerate(labels)}
    targets = [label_id[r.label] for r in records]
    splits = dict(
        zip(
            CLASSIFY_SPLITS,
            stratified_split(targets, cfg.val_fraction, cfg.test_fraction, cfg.seed),
            strict=True,
        )
    )
    for name, indices in splits.items():
        if len(indices) == 0:
            raise BadInput(
                f"{data}: {len(records)} records leave the {name} split empty; add records or "
                f"change classify.val_fraction / classify.test_fraction"
            )
    base_model, enc = load_language_model(base, device)
    eot = eot_id(enc)
    max_length = context_length(cfg.max_length, base_model.config.block_size, "classify.max_length")
    # Right padding; an empty text still has one token to read the class from.
    examples = [(encode(enc, r.text)[:max_length] or [eot], label_id[r.label]) for r in records]
    split_examples = {name: [examples[int(i)] for i in idx] for name, idx in splits.items()}

    def collate(batch: Any) -> tuple[torch.Tensor, ...]:
        return collate_classify(batch, eot)

    train_set = split_examples["train"]
    sampler = WindowSampler(len(train_set), cfg.batch_size, cfg.seed)
    val_set = split_examples["val"][: cfg.eval_batches * cfg.batch_size]
    val_batches = batches_of(val_set, cfg.batch_size, collate)

    def validate(model: torch.nn.Module) -> dict[str, float]:
        loss, accuracy = classify_metrics(model, val_batches)
        return {"val_loss": loss, "val_accuracy": accuracy}

    seed_everything(cfg.seed)
    model = with_classifier(base_model, len(labels))
    del base_model
    result = train(
        model,
        cfg,
        batch_at=lambda i: collate([train_set[j] for j in sampler.indices(i)]),
        loss_of=classify_loss,
        validate=validate,
        plot_dir=plots,
        checkpoint_dir=checkpoints,
        checkpoint_key={"base": files_sha256(base / WEIGHTS), "data": files_sha256(data)},
        description="finetune classify",
    )

    # Final losses and accuracies over whole splits replace the sampled validation's.
    metrics: dict[str, Any] = result.metrics(perplexity=False)
    train_labels = [label for _, label in train_set]
    with evaluating(model, cfg.dtype):
        for name, items in split_examples.items():
            loss, accuracy = classify_metrics(model, batches_of(items, cfg.batch_size, collate))
            metrics[f"{name}_accuracy"] = accuracy
            if name != "train":
                metrics[f"{name}_loss"] = loss
    for name, items in split_examples.items():
        metrics[f"majority_baseline_{name}"] = majority_accuracy(
            train_labels, [label for _, label in items]
        )
    metrics |= {
        "labels": labels,
        **{f"{name}_records": len(items) for name, items in split_examples.items()},
        "max_length": max_length,
        "epochs": sampler.epoch(result.steps * cfg.grad_accum),
    }
    meta = {
        "stage": "classify",
        "steps": result.steps,
        "train_loss": result.train_loss,
        "val_accuracy": metrics["val_accuracy"],
        "test_accuracy": metrics["test_accuracy"],
        "max_length": max_length,
        "seed": cfg.seed,
    }
    save_model(out, model.to(torch.device("cpu")), base, labels=labels, meta=meta)
    write_json(metrics_path, metrics)
    return metrics


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    base: BaseModelOption = layout.BASE,
    data: Annotated[
        Path, typer.Option(help="Labelled texts: 'label<TAB>text' lines, no header.")
    ] = layout.CLASSIFY_DATA,
    out: ModelOutOption = layout.CLASSIFY_MODEL,
    metrics: MetricsOption = layout.METRICS / "classify.json",
    plots: PlotsOption = layout.PLOTS / "classify",
    checkpoints: CheckpointsOption = layout.CHECKPOINTS / "classify",
) -> None:
    """Fine-tune the base model as a classifier (a head on the last token's hidden state).

    Resumes from a compatible checkpoint; Ctrl-C or SIGTERM saves one and exits 130.
    """
    cfg = section("classify", params, set_)
    tune_allocator()  # keep freed activation memory in the heap: fewer page faults
    run(cfg, base, data, out, metrics, plots, checkpoints)
