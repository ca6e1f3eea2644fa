"""DVC stage `finetune-instruct`: instruction fine-tuning of the base model (Alpaca format)."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
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
from gptpipe.config import InstructConfig
from gptpipe.errors import BadInput
from gptpipe.finetune.batches import context_length, encode, fixed_batches, length_batches
from gptpipe.finetune.instruct import (
    Instruction,
    RougeL,
    collate_instructions,
    exact_match,
    read_instructions,
    tokenize_instruction,
)
from gptpipe.finetune.judge import judge
from gptpipe.finetune.splits import ordered_split
from gptpipe.finetune.trainable import finished, select_trainable, with_epochs
from gptpipe.fsutil import files_sha256, staged_outputs, write_json
from gptpipe.generate.decode import Decoding, generate_many
from gptpipe.metrics import headline, ran_with, wall_seconds, write_metrics
from gptpipe.model.folder import WEIGHTS, load_language_model, save_model
from gptpipe.model.gpt import GPT
from gptpipe.outputs import Output, check_paths
from gptpipe.progress import progress, wrote
from gptpipe.prompts import format_prompt
from gptpipe.runtime import seed_everything, set_threads, tune_allocator
from gptpipe.tokenizer.folder import eot_id
from gptpipe.tokens.sampler import WindowSampler
from gptpipe.train.distributed import training_device
from gptpipe.train.loop import train
from gptpipe.train.losses import lm_loss, masked_lm_loss
from gptpipe.train.outputs import training_outputs
from gptpipe.train.precision import evaluating

_SPLITS = ("train", "test", "val")  # the order of instruct.split's shares
_DEFAULT_RESPONSES = Path("reports/instruct/responses.json")


def _split_records(n: int, cfg: InstructConfig, data: Path) -> dict[str, np.ndarray]:
    """Train / test / val indices: the shares of instruct.split in file order (or shuffled
    with the seed first); every split must hold at least one record."""
    order = np.random.default_rng(cfg.seed).permutation(n) if cfg.shuffle else np.arange(n)
    parts = {
        name: order[idx] for name, idx in zip(_SPLITS, ordered_split(n, cfg.split), strict=True)
    }
    for name, idx in parts.items():
        if len(idx) == 0:
            raise BadInput(
                f"{data}: {n} records leave the {name} split empty; add records or change "
                "instruct.split"
            )
    return parts


def _respond(
    model: GPT,
    enc: Any,
    records: list[Instruction],
    max_new_tokens: int,
    eot: int,
    batch_size: int,
    advance: Callable[[int], object] | None = None,
) -> list[str]:
    """Greedy responses to the records' prompts (the model in eval mode, no grad), each
    ending before <|endoftext|>: on the KV cache, `batch_size` prompts at a time. At the
    context's end the window slides by one token, so that every response is the one a full
    forward over the last block_size tokens per step gives (the cache is rebuilt then).
    `advance` is called with the number of records each batch answered."""
    prompts = [encode(enc, format_prompt(r.instruction, r.input)) for r in records]
    decoding = Decoding(max_new_tokens=max_new_tokens, slide=1)
    new = generate_many(
        model, prompts, decoding, stop_ids=(eot,), batch_size=batch_size, advance=advance
    )
    return [enc.decode(ids).strip() for ids in new]


def _scored(
    model: GPT,
    enc: Any,
    cfg: InstructConfig,
    splits: Mapping[str, Sequence[tuple[torch.Tensor, torch.Tensor]]],
    records: list[Instruction],
    eot: int,
    label: str,
) -> tuple[dict[str, float], list[str]]:
    """The model's loss over each split's whole batches and its greedy responses to the test
    `records`, in eval mode: minutes at full size, so each has a progress bar on stderr
    (`label`: which model, e.g. "score base: test responses 12/55")."""
    with evaluating(model, cfg.dtype), progress() as bar:
        losses = {
            name: masked_lm_loss(model, bar.track(batches, description=f"{label}: {name} loss"))
            for name, batches in splits.items()
        }
        task = bar.add_task(f"{label}: test responses", total=len(records))
        advance = functools.partial(bar.advance, task)
        responses = _respond(
            model, enc, records, cfg.max_new_tokens, eot, cfg.batch_size, advance=advance
        )
    return losses, responses


def run(
    cfg: InstructConfig,
    base: Path,
    data: Path,
    out: Path,
    metrics_path: Path,
    plots: Path,
    responses_path: Path | None = None,
    checkpoints: Path | None = None,
    details: Path | None = None,
) -> dict[str, Any]:
    """Fine-tune on instruction records; write the model, metrics, curves and every test
    response (fine-tuned and base model, with their ROUGE-L and exact match), together or not
    at all. `responses_path` defaults to responses.json beside the metrics."""
    started = time.perf_counter()
    responses_path = responses_path or metrics_path.with_name("responses.json")
    set_threads(cfg.threads)
    device = training_device(cfg)
    records = read_instructions(data)
    splits = _split_records(len(records), cfg, data)
    model, enc = load_language_model(base, device)
    eot = eot_id(enc)
    max_length = context_length(cfg.max_length, model.config.block_size, "instruct.max_length")
    examples = [tokenize_instruction(enc, r, eot, max_length, cfg.mask_prompt) for r in records]
    train_set = [examples[int(i)] for i in splits["train"]]
    val_set = [examples[int(i)] for i in splits["val"]]
    test_set = [examples[int(i)] for i in splits["test"]]
    test_records = [records[int(i)] for i in splits["test"]]
    sampler = WindowSampler(len(train_set), cfg.batch_size, cfg.seed)
    val_batches = [
        collate_instructions([val_set[int(j)] for j in batch], eot)
        for batch in fixed_batches(len(val_set), cfg.batch_size, cfg.eval_batches)
    ]

    def collate(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return collate_instructions(batch, eot)

    whole = {
        "val": length_batches(val_set, cfg.batch_size, collate),
        "test": length_batches(test_set, cfg.batch_size, collate),
    }

    def batch_at(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return collate([train_set[j] for j in sampler.indices(i)])

    base_losses, base_responses = _scored(  # the base model, before fine-tuning
        model, enc, cfg, {"test": whole["test"]}, test_records, eot, "score base"
    )
    seed_everything(cfg.seed)
    counts = select_trainable(model, cfg)
    cfg = with_epochs(cfg, len(train_set))
    # The model, metrics, curves (written while training runs), responses and run details
    # appear together or not at all: all go to staged paths, renamed in together at the end.
    outputs = [out, metrics_path, plots, responses_path] + ([details] if details else [])
    with staged_outputs(*outputs) as staged:
        new_out, new_metrics, new_plots, new_responses = staged[:4]
        new_details = staged[4] if details is not None else None
        result = train(
            model,
            cfg,
            batch_at=batch_at,
            loss_of=lm_loss,
            validate=lambda m: {"val_loss": masked_lm_loss(m, val_batches)},
            plot_dir=new_plots,
            checkpoint_dir=checkpoints,
            checkpoint_key={"base": files_sha256(base / WEIGHTS), "data": files_sha256(data)},
            description="finetune instruct",
        )
        model = finished(model)  # LoRA adapters merged: a plain language model

        losses, responses = _scored(model, enc, cfg, whole, test_records, eot, "score tuned")
        rouge = RougeL()
        answers: list[dict[str, Any]] = []
        for record, response, base_response in zip(
            test_records, responses, base_responses, strict=True
        ):
            answers.append(
                {
                    "instruction": record.instruction,
                    "input": record.input,
                    "reference": record.output,
                    "response": response,
                    "base_response": base_response,
                    "rougeL": rouge(response, record.output),
                    "exact": exact_match(response, record.output),
                    "base_rougeL": rouge(base_response, record.output),
                    "base_exact": exact_match(base_response, record.output),
                }
            )
        n = len(answers)
        metrics = result.metrics() | {
            "val_loss": losses["val"],
            "val_perplexity": math.exp(min(losses["val"], 700.0)),
            "test_loss": losses["test"],
            "base_test_loss": base_losses["test"],
            "test_rougeL": sum(a["rougeL"] for a in answers) / n,
            "base_test_rougeL": sum(a["base_rougeL"] for a in answers) / n,
            "test_exact": sum(a["exact"] for a in answers) / n,
            "base_test_exact": sum(a["base_exact"] for a in answers) / n,
        }
        if cfg.judge_url is not None:
            metrics |= judge(cfg.judge_url, cfg.judge_model, answers, cfg.judge_timeout)
        metrics |= counts | {
            **{f"{name}_records": len(idx) for name, idx in splits.items()},
            "truncated_records": sum(example.truncated for example in examples),
            "max_length": max_length,
            "epochs": sampler.epoch(result.steps * cfg.grad_accum),
            "device": str(device),
        }
        meta = {
            "stage": "instruct",
            "steps": result.steps,
            "train_loss": result.train_loss,
            "val_loss": losses["val"],
            "prompt_format": "alpaca",
            "trainable": cfg.trainable,
            "seed": cfg.seed,
            "data": {"file": data.name, "sha256": files_sha256(data), "records": len(records)},
        }
        save_model(new_out, model.to(torch.device("cpu")), base, meta=meta)
        write_json(new_responses, answers)
        metrics["wall_seconds"] = wall_seconds(started)  # a run detail, not a headline metric
        ran = metrics | ran_with(instruct=cfg)
        write_metrics(new_metrics, headline("instruct", metrics), new_details, ran)
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
    responses: Annotated[
        Path,
        typer.Option(
            help="JSON of every test instruction with the fine-tuned and the base model's "
            "greedy responses and their scores (ROUGE-L, exact match, judge)."
        ),
    ] = _DEFAULT_RESPONSES,
    checkpoints: CheckpointsOption = layout.CHECKPOINTS / "instruct",
    details: RunDetailsOption = layout.RUNS / "instruct.json",
) -> None:
    """Fine-tune the base model to follow instructions (Alpaca prompt format, loss on responses).

    Resumes from a compatible checkpoint; Ctrl-C or SIGTERM saves one and exits 130.
    """
    cfg = section("instruct", params, set_)
    outputs = training_outputs(out, metrics, plots, checkpoints, details)
    inputs = [("--params", params), ("--base", base), ("--data", data)]
    check_paths([*outputs, Output("--responses", responses)], inputs)
    tune_allocator()  # keep freed activation memory in the heap: fewer page faults
    run(cfg, base, data, out, metrics, plots, responses, checkpoints, details)
    wrote("finetune instruct", out, metrics, plots, responses, details)
