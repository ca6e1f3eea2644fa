"""DVC stage `finetune-instruct`: instruction fine-tuning of the base model (Alpaca format)."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from gptpipe import default_paths
from gptpipe.config import InstructConfig
from gptpipe.finetune.batches import context_length, fixed_batches, length_batches
from gptpipe.finetune.instruct import (
    Instruction,
    InstructionExample,
    collate_instructions,
    read_instructions,
    tokenize_instruction,
)
from gptpipe.finetune.judge import judge
from gptpipe.finetune.responses import Scoring, answer_scores, compared, scored
from gptpipe.finetune.splits import instruct_splits
from gptpipe.finetune.trainable import finished, select_trainable, with_epochs
from gptpipe.fsutil import files_sha256, write_json
from gptpipe.metrics import ran_with
from gptpipe.model.folder import WEIGHTS, load_language_model, save_model
from gptpipe.model.gpt import GPT
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
from gptpipe.train.losses import lm_loss, masked_lm_loss
from gptpipe.train.outputs import training_outputs
from gptpipe.train.recipe import Conclude, Recipe, Staged, TrainingPaths, fit

_DEFAULT_RESPONSES = Path("reports/instruct/responses.json")


@dataclass
class _Data:
    """The instruction records tokenised and split, batched for the loop and for scoring."""

    records: list[Instruction]
    splits: dict[str, np.ndarray]
    train_set: list[InstructionExample]
    val_batches: list[tuple[torch.Tensor, torch.Tensor]]  # validations during training
    whole: dict[str, list[tuple[torch.Tensor, torch.Tensor]]]  # whole val and test splits
    test_records: list[Instruction]
    truncated: int
    max_length: int


def _read(cfg: InstructConfig, data: Path, enc: Any, eot: int, block_size: int) -> _Data:
    records = read_instructions(data)
    splits = instruct_splits(len(records), cfg.split, cfg.shuffle, cfg.seed, data)
    max_length = context_length(cfg.max_length, block_size, "instruct.max_length")
    examples = [tokenize_instruction(enc, r, eot, max_length, cfg.mask_prompt) for r in records]
    sets = {name: [examples[int(i)] for i in idx] for name, idx in splits.items()}
    collate = functools.partial(collate_instructions, pad_id=eot)
    val_batches = [
        collate([sets["val"][int(j)] for j in batch])
        for batch in fixed_batches(len(sets["val"]), cfg.batch_size, cfg.eval_batches)
    ]
    whole = {name: length_batches(sets[name], cfg.batch_size, collate) for name in ("val", "test")}
    test_records = [records[int(i)] for i in splits["test"]]
    truncated = sum(example.truncated for example in examples)
    return _Data(
        records, splits, sets["train"], val_batches, whole, test_records, truncated, max_length
    )


def run(cfg: InstructConfig, base: Path, data: Path, paths: TrainingPaths) -> dict[str, Any]:
    """Fine-tune on instruction records; write the model, the headline metrics, the curves,
    every test response (fine-tuned and base model, with their ROUGE-L and exact match:
    `paths.extra`, default responses.json beside the metrics) and the run details, together
    or not at all.

    Under torchrun every process runs this: each trains on its own slice of every global batch
    (DistributedDataParallel or FSDP, as `cfg.strategy` says), and only rank 0 writes."""
    started = time.perf_counter()
    if paths.extra is None:
        paths = dataclasses.replace(paths, extra=paths.metrics.with_name("responses.json"))
    set_threads(cfg.threads)
    with process_group(cfg) as (ranks, device):
        recipe, conclude = _recipe(cfg, base, data, device, ranks)
        recipe.started = started
        return fit(recipe, paths, conclude)


def _recipe(
    cfg: InstructConfig, base: Path, data: Path, device: torch.device, ranks: Ranks
) -> tuple[Recipe, Conclude]:
    """Next-token prediction on the training split's records (this rank's slice of each
    global batch; the loss on the responses with mask_prompt), validated on the first val
    records (every rank scores the same ones). The base model's test scores, which only the
    saved outputs use, are rank 0's alone."""
    model, enc = load_language_model(base, device)
    eot = eot_id(enc)
    got = _read(cfg, data, enc, eot, model.config.block_size)
    scoring = Scoring(cfg.dtype, cfg.max_new_tokens, cfg.batch_size, eot)
    test_only = {"test": got.whole["test"]}  # the base model, before fine-tuning
    base_scores: tuple[dict[str, float], list[str]] = ({}, [])
    if ranks.main:  # the ranks stay in step: everything random is seeded after it
        base_scores = scored(model, enc, test_only, got.test_records, scoring, "score base")
    seed_everything(cfg.seed)
    counts = select_trainable(model, cfg)
    cfg = with_epochs(cfg, len(got.train_set), ranks.world_size)
    sampler = WindowSampler(
        len(got.train_set), cfg.batch_size, cfg.seed, ranks.rank, ranks.world_size
    )
    recipe = Recipe(
        stage="instruct",
        description="finetune instruct",
        cfg=cfg,
        model=model,
        batch_at=lambda i: collate_instructions(
            [got.train_set[j] for j in sampler.indices(i)], eot
        ),
        loss_of=lm_loss,
        validate=lambda m: {"val_loss": masked_lm_loss(m, got.val_batches)},
        checkpoint_key={"base": files_sha256(base / WEIGHTS), "data": files_sha256(data)},
        params=ran_with(instruct=cfg),
        device=device,
        rank=ranks.rank,
    )
    tuned = _Tuned(model, enc, cfg, got, scoring, base_scores, counts, sampler, base, data)
    return recipe, functools.partial(_conclude, tuned, ranks.world_size)


@dataclass
class _Tuned:
    """What scoring and saving the tuned model needs."""

    model: GPT
    enc: Any
    cfg: InstructConfig
    got: _Data
    scoring: Scoring
    base_scores: tuple[dict[str, float], list[str]]  # the base's test loss and responses
    counts: dict[str, Any]  # trainable and total parameters
    sampler: WindowSampler
    base: Path
    data: Path


def _conclude(tuned: _Tuned, processes: int, result: TrainResult, staged: Staged) -> dict[str, Any]:
    """Score the tuned model beside the base, save it and its test responses; the stage's
    own figures."""
    model, cfg, got = finished(tuned.model), tuned.cfg, tuned.got  # LoRA adapters merged
    losses, responses = scored(
        model, tuned.enc, got.whole, got.test_records, tuned.scoring, "score tuned"
    )
    base_losses, base_responses = tuned.base_scores
    answers = compared(got.test_records, responses, base_responses)
    metrics = {
        "val_loss": losses["val"],
        "val_perplexity": math.exp(min(losses["val"], 700.0)),
        "test_loss": losses["test"],
        "base_test_loss": base_losses["test"],
        **answer_scores(answers),
    }
    if cfg.judge_url is not None:
        metrics |= judge(cfg.judge_url, cfg.judge_model, answers, cfg.judge_timeout)
    metrics |= tuned.counts | {f"{name}_records": len(idx) for name, idx in got.splits.items()}
    metrics |= {
        "truncated_records": got.truncated,
        "max_length": got.max_length,
        "epochs": tuned.sampler.epoch(result.steps * cfg.grad_accum),
        "processes": processes,
    }
    meta = {
        "stage": "instruct",
        "steps": result.steps,
        "train_loss": result.train_loss,
        "val_loss": losses["val"],
        "prompt_format": "alpaca",
        "trainable": cfg.trainable,
        "seed": cfg.seed,
        "data": {"file": tuned.data.name, "sha256": files_sha256(tuned.data)}
        | {"records": len(got.records)},
    }
    save_model(staged.model, model.to(torch.device("cpu")), tuned.base, meta=meta)
    assert staged.extra is not None  # run() always names the responses file
    write_json(staged.extra, answers)
    return metrics


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    base: BaseModelOption = default_paths.BASE,
    data: Annotated[
        Path, typer.Option(help="Instruction records: a JSON list of {instruction, input, output}.")
    ] = default_paths.INSTRUCT_DATA,
    out: ModelOutOption = default_paths.INSTRUCT_MODEL,
    metrics: MetricsOption = default_paths.METRICS / "instruct.json",
    plots: PlotsOption = default_paths.PLOTS / "instruct",
    responses: Annotated[
        Path,
        typer.Option(
            help="JSON of every test instruction with the fine-tuned and the base model's "
            "greedy responses and their scores (ROUGE-L, exact match, judge)."
        ),
    ] = _DEFAULT_RESPONSES,
    checkpoints: CheckpointsOption = default_paths.CHECKPOINTS / "instruct",
    details: RunDetailsOption = default_paths.RUNS / "instruct.json",
) -> None:
    """Fine-tune the base model to follow instructions (Alpaca prompt format, loss on responses).

    Resumes from a compatible checkpoint; Ctrl-C or SIGTERM saves one and exits 130.
    With instruct.nproc > 1 it relaunches itself under torchrun (instruct.strategy: ddp or
    fsdp); it also runs as is under `torchrun --nproc_per_node N -m gptpipe finetune ...`.
    """
    cfg = section("instruct", params, set_)
    outputs = training_outputs(out, metrics, plots, checkpoints, details)
    inputs = [("--params", params), ("--base", base), ("--data", data)]
    check_paths([*outputs, Output("--responses", responses)], inputs)
    tune_allocator()  # keep freed activation memory in the heap: fewer page faults
    if relaunched(cfg):  # instruct.nproc processes under torchrun did it (rank 0 said so)
        return
    run(cfg, base, data, TrainingPaths(out, metrics, plots, checkpoints, details, responses))
    if launched_ranks().main:  # under torchrun, the process that wrote them
        wrote("finetune instruct", out, metrics, plots, responses, details)
