"""DVC stage `sample`: greedy and sampled continuations of fixed prompts from each model."""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from gptpipe import layout
from gptpipe.cli.options import ParamsOption, SetOption, section
from gptpipe.config import SampleConfig
from gptpipe.errors import BadInput
from gptpipe.fsutil import atomic_dir
from gptpipe.generate.samples import prompt_continuations, resolve, sample_seed
from gptpipe.model.folder import is_instruct, load_language_model, read_info
from gptpipe.progress import progress
from gptpipe.prompts import format_prompt
from gptpipe.report.samples import samples_markdown
from gptpipe.runtime import resolve_device

_DEFAULT_MODELS = [layout.PRETRAIN, layout.BASE, layout.INSTRUCT_MODEL]
_SAMPLES_JSON = "samples.json"
_SAMPLES_MD = "samples.md"


def run(cfg: SampleConfig, models: list[Path], out: Path) -> list[dict[str, Any]]:
    """Sample from each model with each setting of sample.decoding; write samples.json and
    samples.md into the folder `out`."""
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise BadInput(f"model folders must have distinct names (samples.json keys): {names}")
    for model_dir in models:
        if not model_dir.is_dir():
            raise BadInput(f"{model_dir}: model folder not found")
    device = resolve_device(cfg.device)
    records: list[dict[str, Any]] = []
    with progress() as bar:
        task = bar.add_task("sample", total=None)
        total = 0
        for model_dir in models:
            model, encoding = load_language_model(model_dir, device)
            instruct = is_instruct(model_dir, read_info(model_dir))
            formats = ["raw", "alpaca"] if instruct else ["raw"]
            total += len(formats) * len(cfg.prompts)
            bar.update(task, total=total)
            for prompt_format in formats:
                for prompt in cfg.prompts:
                    text = format_prompt(prompt) if prompt_format == "alpaca" else prompt

                    seed_of = partial(sample_seed, cfg.seed, model_dir.name, prompt_format, prompt)
                    for item in prompt_continuations(model, encoding, cfg, text, seed_of):
                        records.append(
                            {"model": model_dir.name, "prompt": prompt, "format": prompt_format}
                            | item
                        )
                    bar.advance(task)
    with atomic_dir(out) as tmp:
        (tmp / _SAMPLES_JSON).write_text(
            json.dumps(records, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        lines = ["# Samples", "", *_settings(cfg), "", *samples_markdown(records, level=2)]
        (tmp / _SAMPLES_MD).write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return records


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
    ] = layout.SAMPLES,
) -> None:
    """Continue each prompt of sample.prompts with each model and each sample.decoding setting."""
    records = run(section("sample", params, set_), list(model) if model else _DEFAULT_MODELS, out)
    print(f"wrote {len(records)} samples to {out}", file=sys.stderr)
