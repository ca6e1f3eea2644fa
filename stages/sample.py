"""DVC stage `sample`: greedy and sampled continuations of fixed prompts from each model."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import tiktoken
import typer
from rich.progress import Progress, TaskID

from gptpipe import default_paths
from gptpipe.config import SampleConfig
from gptpipe.errors import BadInput
from gptpipe.fsutil import files_sha256, staged_outputs, write_json
from gptpipe.generate.attention import ATTENTION_FOLDER, draw_attention
from gptpipe.generate.samples import (
    prompt_continuations,
    require_samples_fit,
    resolve,
    sample_seed,
)
from gptpipe.generate.text import context_ids
from gptpipe.metrics import ran_with, wall_seconds
from gptpipe.model.folder import WEIGHTS, is_instruct, load_language_model, read_info
from gptpipe.model.gpt import GPT
from gptpipe.model.skipped import read_skipped
from gptpipe.options import ParamsOption, SetOption, StageDetailsOption, section
from gptpipe.outputs import Output, check_paths, folder_kind
from gptpipe.progress import progress, wrote
from gptpipe.prompts import format_prompt
from gptpipe.report.samples import samples_markdown
from gptpipe.runtime import resolve_device

_DEFAULT_MODELS = [default_paths.PRETRAIN, default_paths.BASE, default_paths.INSTRUCT_MODEL]
_SAMPLES_JSON = "samples.json"
_SAMPLES_MD = "samples.md"
_SAMPLES_FOLDER = folder_kind("samples folder", {_SAMPLES_JSON})  # gptpipe.outputs recognises


def run(
    cfg: SampleConfig,
    models: list[Path],
    out: Path,
    attention: Path | None = None,
    details: Path | None = None,
) -> list[dict[str, Any]]:
    """Sample from each model with each setting of sample.decoding; write samples.json and
    samples.md into the folder `out`, the attention maps of `cfg.attention_prompt` (read by
    the most trained language model, see `_attention_model`) into the folder `attention`, and
    the run details (wall seconds) to `details`; all of them appear together.

    A model folder that is a skipped marker (pretraining skipped because base.source names
    another base) is left out, and samples.md says so; a model whose weights equal an earlier
    one's is sampled once.
    """
    started = time.perf_counter()
    skipped, same, present = _which_models(models)
    for model_dir in present:  # a count that cannot fit is refused before loading anything
        require_samples_fit(cfg, read_info(model_dir).config)
    drawn_by = _attention_model(present)
    device = resolve_device(cfg.device, "sample.device")
    records: list[dict[str, Any]] = []
    targets = [out] + [p for p in (attention, details) if p is not None]
    with staged_outputs(*targets) as staged, progress() as bar:
        new_attention = staged[1] if attention is not None else None
        total = sum(len(_formats(m)) for m in present) * len(cfg.prompts)
        task = bar.add_task("sample", total=total)
        for model_dir in present:
            model, encoding = load_language_model(model_dir, device)
            records += _model_samples(cfg, model_dir, model, encoding, (bar, task))
            if new_attention is not None and model_dir == drawn_by:
                _write_attention(model, encoding, cfg, model_dir, new_attention)
        _write_samples(staged[0], records, cfg, _skipped_lines(skipped, same))
        if details is not None:
            run_details: dict[str, Any] = {
                "models": [m.name for m in present],
                "skipped_models": sorted(skipped),
                "same_weights": same,
                "samples": len(records),
                "device": str(device),
                "wall_seconds": wall_seconds(started),
            }
            write_json(staged[-1], run_details | ran_with(sample=cfg))
    return records


def _which_models(models: list[Path]) -> tuple[dict[str, str], dict[str, str], list[Path]]:
    """(skipped markers {name: why}, weights seen before {name: twin}, the models to sample);
    names must be distinct (they key samples.json) and every folder must exist."""
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise BadInput(f"model folders must have distinct names (samples.json keys): {names}")
    for model_dir in models:
        if not model_dir.is_dir():
            raise BadInput(f"{model_dir}: model folder not found")
    skipped = {m.name: str(r.get("reason", "")) for m in models if (r := read_skipped(m))}
    present = [m for m in models if m.name not in skipped]
    if not present:
        raise BadInput(f"no model to sample from: {', '.join(map(str, models))} were all skipped")
    same = _same_weights(present)
    return skipped, same, [m for m in present if m.name not in same]


def _model_samples(
    cfg: SampleConfig,
    model_dir: Path,
    model: GPT,
    encoding: tiktoken.Encoding,
    progress_task: tuple[Progress, TaskID],
) -> list[dict[str, Any]]:
    """Every prompt continued by one model with every decoding setting (an instruction-tuned
    model also answers each prompt as an Alpaca instruction)."""
    bar, task = progress_task
    records = []
    for prompt_format in _formats(model_dir):
        for prompt in cfg.prompts:
            text = format_prompt(prompt) if prompt_format == "alpaca" else prompt
            seed_of = partial(sample_seed, cfg.seed, model_dir.name, prompt_format, prompt)
            for item in prompt_continuations(model, encoding, cfg, text, seed_of):
                records.append(
                    {"model": model_dir.name, "prompt": prompt, "format": prompt_format} | item
                )
            bar.advance(task)
    return records


def _formats(model_dir: Path) -> list[str]:
    """How a model is prompted: as written, and as an Alpaca instruction if it was tuned."""
    return ["raw", "alpaca"] if is_instruct(model_dir, read_info(model_dir)) else ["raw"]


def _write_samples(
    folder: Path, records: list[dict[str, Any]], cfg: SampleConfig, notes: list[str]
) -> None:
    """samples.json (every record) and samples.md (the settings, `notes`, the texts)."""
    folder.mkdir(mode=0o755)
    (folder / _SAMPLES_JSON).write_text(
        json.dumps(records, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    lines = ["# Samples", "", *_settings(cfg), *notes, ""]
    lines += samples_markdown(records, level=2)
    (folder / _SAMPLES_MD).write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")


def _attention_model(models: list[Path]) -> Path:
    """The most trained language model of those given: the last instruction-tuned one, else
    the last one (the stage's default order is pretrain, base, instruct)."""
    tuned = [m for m in models if is_instruct(m, read_info(m))]
    return (tuned or models)[-1]


def _write_attention(
    model: GPT, encoding: tiktoken.Encoding, cfg: SampleConfig, model_dir: Path, folder: Path
) -> None:
    """Heatmaps of every layer (heads in a grid) on the attention prompt, and attention.json
    saying which model read which text (the report shows one of them)."""
    text = cfg.attention_prompt or cfg.prompts[0]
    paths = draw_attention(model, encoding, text, folder)
    record = {
        "model": model_dir.name,
        "prompt": text,
        "tokens": len(context_ids(model, encoding, text, warn=False)),
        "layers": [p.name for p in paths],
        "heads": model.config.n_head,
    }
    text_json = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    (folder / default_paths.ATTENTION_JSON).write_text(text_json, encoding="utf-8")


def _same_weights(models: list[Path]) -> dict[str, str]:
    """{model: the earlier model with byte-identical weights}: sampled once (the base model
    copied from pretraining reads exactly as the pretrained one)."""
    first: dict[str, str] = {}
    same: dict[str, str] = {}
    for model_dir in models:
        digest = files_sha256(model_dir / WEIGHTS)
        if digest in first:
            same[model_dir.name] = first[digest]
        else:
            first[digest] = model_dir.name
    return same


def _skipped_lines(skipped: dict[str, str], same: dict[str, str]) -> list[str]:
    if not skipped and not same:
        return []
    lines = [f"Not sampled: `{name}`, skipped ({why})." for name, why in skipped.items()]
    lines += [
        f"Not sampled again: `{name}` has the same weights as `{twin}` (its samples below)."
        for name, twin in same.items()
    ]
    return ["", *lines]


def _settings(cfg: SampleConfig) -> list[str]:
    lines = [
        f"Up to {cfg.max_new_tokens} new tokens per continuation, stopping at <|endoftext|> "
        f"(seed {cfg.seed}). Instruction-tuned models also answer each prompt as an Alpaca "
        "instruction. Decoding settings:",
        "",
    ]
    for entry in cfg.decoding:
        decoding, count = resolve(cfg, entry)
        rules = [f"temperature {decoding.temperature}"]
        if decoding.top_k:
            rules.append(f"top-k {decoding.top_k}")
        if decoding.top_p < 1:
            rules.append(f"top-p {decoding.top_p}")
        if decoding.repetition_penalty != 1:
            rules.append(f"repetition penalty {decoding.repetition_penalty}")
        if decoding.num_beams > 1:
            rules = [
                f"beam search, {decoding.num_beams} beams, length penalty {decoding.length_penalty}"
            ]
        if decoding.stop:
            rules.append(f"stops at {list(decoding.stop)}")
        what = "1 continuation" if count == 1 else f"{count} samples"
        lines.append(f"- **{entry.name}**: {', '.join(rules)}; {what} per prompt")
    return lines


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    model: Annotated[
        list[Path] | None,
        typer.Option(
            "--model",
            help="Model folder (repeatable). Default: models/pretrain, models/base and "
            "models/instruct.",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Folder to write samples.json and samples.md into.")
    ] = default_paths.SAMPLES,
    attention: Annotated[
        Path,
        typer.Option(
            help="Folder for the attention maps of sample.attention_prompt: layer_NN.png "
            "and attention.json."
        ),
    ] = default_paths.ATTENTION,
    details: StageDetailsOption = None,
) -> None:
    """Continue each prompt of sample.prompts with each model and each sample.decoding setting,
    and draw the attention maps of sample.attention_prompt."""
    cfg: SampleConfig = section("sample", params, set_)
    models = list(model) if model else _DEFAULT_MODELS
    outputs = [
        Output("--out", out, _SAMPLES_FOLDER),
        Output("--attention", attention, ATTENTION_FOLDER),
    ]
    check_paths(
        [*outputs, Output("--details", details)],
        [("--params", params), *(("--model", m) for m in models)],
    )
    records = run(cfg, models, out, attention, details)
    wrote("sample", out, attention, details, summary=f"{len(records)} samples")
