"""DVC stage `report`: reports/report.md with headline metrics, loss figures and samples."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gptpipe import layout
from gptpipe.cli.options import ParamsOption, SetOption, section
from gptpipe.config import ReportConfig
from gptpipe.fsutil import atomic_dir, write_text
from gptpipe.report.figures import write_figures
from gptpipe.report.inputs import ReportInputs, read_curves, read_list, read_metrics, read_models
from gptpipe.report.markdown import render_report

_DEFAULT_MODELS = [layout.BASE, layout.INSTRUCT_MODEL, layout.CLASSIFY_MODEL]
_DEFAULT_EXAMPLES = Path("reports/instruct_examples.json")


def run(
    cfg: ReportConfig,
    metrics: Path,
    plots: Path,
    samples: Path,
    examples: Path,
    models: list[Path],
    out: Path,
    figures: Path,
) -> str:
    """Write the figures folder and the report; returns the report's Markdown.

    Any input that does not exist is reported as "not run"; inputs that exist but are
    malformed are bad input naming the file.
    """
    samples_file = samples / "samples.json" if samples.is_dir() else samples
    inputs = ReportInputs(
        title=cfg.title,
        metrics=read_metrics(metrics),
        curves=read_curves(plots),
        samples=read_list(samples_file),
        examples=read_list(examples),
        models=read_models(models),
    )
    with atomic_dir(figures) as tmp:
        made = write_figures(inputs.curves, tmp)
    text = render_report(inputs, made, figures, out)
    write_text(out, text)
    return text


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    metrics: Annotated[Path, typer.Option(help="Folder of metrics JSON files.")] = layout.METRICS,
    plots: Annotated[
        Path, typer.Option(help="Folder of curves: <stage>/train.csv and <stage>/val.csv.")
    ] = layout.PLOTS,
    samples: Annotated[
        Path, typer.Option(help="Samples folder (or its samples.json).")
    ] = layout.SAMPLES,
    examples: Annotated[
        Path, typer.Option(help="Instruction examples JSON (gptpipe finetune instruct).")
    ] = _DEFAULT_EXAMPLES,
    model: Annotated[
        list[Path] | None,
        typer.Option(help="Model folder whose parameters are counted (repeatable)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="The Markdown report to write.")] = layout.REPORT,
    figures: Annotated[
        Path, typer.Option(help="Folder for the PNG figures (linked from the report).")
    ] = layout.FIGURES,
) -> None:
    """Write the Markdown report: metrics summary, loss curves, parameter counts, samples."""
    cfg: ReportConfig = section("report", params, set_)
    models = list(model) if model else _DEFAULT_MODELS
    run(cfg, metrics, plots, samples, examples, models, out, figures)
    print(f"wrote {out} (figures in {figures})", file=sys.stderr)
