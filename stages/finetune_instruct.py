"""DVC stage `finetune-instruct`: instruction fine-tuning of the base model (Alpaca format)."""

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
from gptpipe.config import InstructConfig
from gptpipe.errors import BadInput
from gptpipe.finetune.batches import context_length, encode, fixed_batches
from gptpipe.finetune.instruct import collate_instructions, read_instructions, tokenize_instruction
from gptpipe.finetune.splits import split_indices
from gptpipe.fsutil import files_sha256, write_json
from gptpipe.generate.decode import generate
from gptpipe.model.folder import WEIGHTS, load_language_model, save_model
from gptpipe.prompts import format_prompt
from gptpipe.runtime import seed_everything, set_threads, tune_allocator
from gptpipe.tokenizer.folder import eot_id
from gptpipe.tokens.sampler import WindowSampler
from gptpipe.train.distributed import training_device
from gptpipe.train.loop import train
from gptpipe.train.losses import lm_loss, masked_lm_loss
from gptpipe.train.precision import evaluating


def run(
    cfg: InstructConfig,
    base: Path,
    data: Path,
    out: Path,
    metrics_path: Path,
    plots: Path,
    examples_path: Path,
    checkpoints: Path | None = None,
) -> dict[str, Any]:
    """Fine-tune on instruction records; write the model, metrics, curves and example answers."""
    set_threads(cfg.threads)
    device = training_device(cfg)
    records = read_instructions(data)
    model, enc = load_language_model(base, device)
    eot = eot_id(enc)
    max_length = context_length(cfg.max_length, model.config.block_size, "instruct.max_length")

    val_idx, train_idx = split_indices(len(records), [cfg.val_fraction], cfg.seed)
    if len(train_idx) == 0:
        raise BadInput(
            f"{data}: {len(records)} records leave no training records; "
            "lower instruct.val_fraction or add records"
        )
    examples = [tokenize_instruction(enc, r, eot, max_length) for r in records]
    train_set = [examples[int(i)] for i in train_idx]
    sampler = WindowSampler(len(train_set), cfg.batch_size, cfg.seed)
    val_batches = [
        collate_instructions([examples[int(val_idx[j])] for j in batch], eot)
        for batch in fixed_batches(len(val_idx), cfg.batch_size, cfg.eval_batches)
    ]

    def batch_at(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return collate_instructions([train_set[j] for j in sampler.indices(i)], eot)

    seed_everything(cfg.seed)
    result = train(
        model,
        cfg,
        batch_at=batch_at,
        loss_of=lm_loss,
        validate=lambda m: {"val_loss": masked_lm_loss(m, val_batches)},
        plot_dir=plots,
        checkpoint_dir=checkpoints,
        checkpoint_key={"base": files_sha256(base / WEIGHTS), "data": files_sha256(data)},
        description="finetune instruct",
    )

    answers = []
    with evaluating(model, cfg.dtype):
        for i in val_idx[: cfg.num_examples]:
            record = records[int(i)]
            prompt = encode(enc, format_prompt(record.instruction, record.input))
            new = generate(model, prompt, cfg.max_new_tokens, temperature=0.0, stop_id=eot)
            answers.append(
                {
                    "instruction": record.instruction,
                    "input": record.input,
                    "reference": record.output,
                    "response": enc.decode(new),
                }
            )
    val_loss = result.val["val_loss"]
    metrics = result.metrics() | {
        "train_records": len(train_idx),
        "val_records": len(val_idx),
        "truncated_records": sum(example.truncated for example in examples),
        "max_length": max_length,
        "epochs": sampler.epoch(result.steps * cfg.grad_accum),
    }
    meta = {
        "stage": "instruct",
        "steps": result.steps,
        "train_loss": result.train_loss,
        "val_loss": val_loss,
        "prompt_format": "alpaca",
        "seed": cfg.seed,
    }
    save_model(out, model.to(torch.device("cpu")), base, meta=meta)
    write_json(examples_path, answers)
    write_json(metrics_path, metrics)
    return metrics


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    base: BaseModelOption = layout.BASE,
    data: Annotated[
        Path, typer.Option(help="Instruction records: a JSON list of {instruction, input, output}.")
    ] = layout.INSTRUCT_DATA,
    out: ModelOutOption = layout.INSTRUCT_MODEL,
    metrics: MetricsOption = layout.METRICS / "instruct.json",
    plots: PlotsOption = layout.PLOTS / "instruct",
    examples: Annotated[
        Path, typer.Option(help="JSON of held-out instructions with the model's greedy answers.")
    ] = Path("reports/instruct_examples.json"),
    checkpoints: CheckpointsOption = layout.CHECKPOINTS / "instruct",
) -> None:
    """Fine-tune the base model to follow instructions (Alpaca prompt format, loss on responses).

    Resumes from a compatible checkpoint; Ctrl-C or SIGTERM saves one and exits 130.
    """
    cfg = section("instruct", params, set_)
    tune_allocator()  # keep freed activation memory in the heap: fewer page faults
    run(cfg, base, data, out, metrics, plots, examples, checkpoints)
