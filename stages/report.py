"""DVC stage `report`: reports/report.md with headline metrics, loss figures and samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from gptpipe import default_paths
from gptpipe.config import ReportConfig
from gptpipe.fsutil import staged_outputs
from gptpipe.options import ParamsOption, SetOption, section
from gptpipe.outputs import Output, check_paths
from gptpipe.progress import wrote
from gptpipe.report.compare import compare_table, read_experiments
from gptpipe.report.environment import collect_environment
from gptpipe.report.figures import FIGURES_FOLDER, write_figures
from gptpipe.report.history import committed_metrics
from gptpipe.report.inputs import (
    METRIC_FILES,
    RUN_FILES,
    ReportInputs,
    read_confusion,
    read_curves,
    read_list,
    read_metrics,
    read_models,
    read_object,
    recorded_params,
)
from gptpipe.report.markdown import render_report

_DEFAULT_MODELS = [default_paths.BASE, default_paths.INSTRUCT_MODEL, default_paths.CLASSIFY_MODEL]
_DEFAULT_RESPONSES = Path("reports/instruct/responses.json")


@dataclass
class _Sources:
    """What the report card reads, all artifacts of earlier stages; any of them may be absent
    (its section says "not run")."""

    metrics: Path = default_paths.METRICS
    plots: Path = default_paths.PLOTS
    samples: Path = default_paths.SAMPLES
    examples: Path = _DEFAULT_RESPONSES
    models: list[Path] = field(default_factory=lambda: list(_DEFAULT_MODELS))
    runs: Path = default_paths.RUNS
    provenance: Path = default_paths.PROVENANCE
    shards: Path = default_paths.SHARDS
    tokenizer: Path = default_paths.TOKENIZER
    responses: Path = _DEFAULT_RESPONSES
    attention: Path = default_paths.ATTENTION  # the sample stage's attention maps


def run(cfg: ReportConfig, out: Path, figures: Path, sources: _Sources | None = None) -> str:
    """Write the figures folder and the report; returns the report's Markdown.

    Any input that does not exist is reported as "not run"; inputs that exist but are
    malformed are bad input naming the file.
    """
    src = sources or _Sources()
    samples_file = src.samples / "samples.json" if src.samples.is_dir() else src.samples
    runs = read_metrics(src.runs, RUN_FILES)
    repo = Path.cwd()
    committed = {n: src.metrics / f"{n}.json" for n in METRIC_FILES}
    inputs = ReportInputs(
        title=cfg.title,
        metrics=read_metrics(src.metrics),
        curves=read_curves(src.plots),
        samples=read_list(samples_file),
        examples=read_list(src.examples),
        models=read_models(src.models),
        runs=runs,
        params=recorded_params(runs),
        environment=collect_environment(repo),
        provenance=read_object(src.provenance),
        manifest=read_object(src.shards / "manifest.json"),
        tokenizer=read_object(src.tokenizer / "tokenizer.json"),
        confusion=read_confusion(src.plots / "classify" / "confusion.json"),
        responses=read_list(src.responses),
        previous=committed_metrics(repo, committed),
        attention=read_object(src.attention / default_paths.ATTENTION_JSON),
        attention_dir=src.attention,
    )
    # Figures and report appear together: both are written to staged paths, then renamed in.
    with staged_outputs(figures, out) as (new_figures, new_out):
        new_figures.mkdir(mode=0o755)
        made = write_figures(inputs.curves, new_figures, inputs.confusion)
        text = render_report(inputs, made, figures, out)
        new_out.write_text(text, encoding="utf-8")
    return text


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    metrics: Annotated[
        Path, typer.Option(help="Folder of metrics JSON files.")
    ] = default_paths.METRICS,
    plots: Annotated[
        Path, typer.Option(help="Folder of curves: <stage>/train.csv and <stage>/val.csv.")
    ] = default_paths.PLOTS,
    samples: Annotated[
        Path, typer.Option(help="Samples folder (or its samples.json).")
    ] = default_paths.SAMPLES,
    examples: Annotated[
        Path, typer.Option(help="Instruction examples JSON (gptpipe finetune instruct).")
    ] = _DEFAULT_RESPONSES,
    model: Annotated[
        list[Path] | None,
        typer.Option(help="Model folder whose parameters are counted (repeatable)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="The Markdown report to write.")] = default_paths.REPORT,
    figures: Annotated[
        Path, typer.Option(help="Folder for the PNG figures (linked from the report).")
    ] = default_paths.FIGURES,
    runs: Annotated[
        Path, typer.Option(help="Folder of run details: <stage>.json (seconds, device, steps).")
    ] = default_paths.RUNS,
    provenance: Annotated[
        Path, typer.Option(help="Data provenance JSON (gptpipe download).")
    ] = default_paths.PROVENANCE,
    shards: Annotated[
        Path, typer.Option(help="Shards folder; its manifest.json gives token counts.")
    ] = default_paths.SHARDS,
    tokenizer: Annotated[Path, typer.Option(help="Tokenizer folder.")] = default_paths.TOKENIZER,
    responses: Annotated[
        Path, typer.Option(help="Instruction test responses JSON with ROUGE-L, if any.")
    ] = _DEFAULT_RESPONSES,
    attention: Annotated[
        Path, typer.Option(help="Attention maps folder (gptpipe sample): attention.json.")
    ] = default_paths.ATTENTION,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Instead of the report: print a Markdown table of the DVC experiments "
            "(dvc exp show --json): params that differ, headline metrics, best first.",
        ),
    ] = False,
) -> None:
    """Write the report card: summary against references, params, environment, data,
    tokenizer, training curves, classification, responses, attention maps, parameters,
    samples, evaluation, the change against the last committed run, and wall times."""
    cfg: ReportConfig = section("report", params, set_)
    if compare:
        print(compare_table(read_experiments(Path.cwd())), end="")
        return
    models = list(model) if model else _DEFAULT_MODELS
    sources = _Sources(metrics, plots, samples, examples, models, runs, provenance, shards)
    sources.tokenizer, sources.responses, sources.attention = tokenizer, responses, attention
    read = {"--params": params, "--metrics": metrics, "--plots": plots, "--samples": samples}
    read |= {"--examples": examples, "--runs": runs, "--provenance": provenance}
    read |= {"--shards": shards, "--tokenizer": tokenizer, "--responses": responses}
    read |= {"--attention": attention}
    inputs = [*read.items(), *(("--model", m) for m in models)]
    check_paths([Output("--out", out), Output("--figures", figures, FIGURES_FOLDER)], inputs)
    run(cfg, out, figures, sources)
    wrote("report", out, figures)
