"""The run report as Markdown: headline metrics, figures, parameter counts, examples, samples.

It renders what `gptpipe.report.inputs` read from earlier stages' artifacts; a missing input
is shown as "not run" rather than failing, so the report also works on a partial run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gptpipe.finetune.splits import CLASSIFY_SPLITS
from gptpipe.model.params import (
    PARAM_GROUPS,
    head_is_tied,
)
from gptpipe.report.inputs import METRIC_FILES, STAGES, ModelEntry, ReportInputs
from gptpipe.report.samples import samples_markdown
from gptpipe.report.text import NOT_RUN, fenced, fmt, table

# --------------------------------------------------------------------------- Markdown


def summary_rows(metrics: dict[str, dict[str, Any]]) -> list[list[str]]:
    """The headline metrics: [stage, metric, value, reference]."""
    rows: list[list[str]] = []
    pre = metrics.get("pretrain")
    if pre is None:
        rows.append(["pretrain", "final train / val loss", NOT_RUN, ""])
    else:
        rows.append(["pretrain", "final train loss", fmt(pre.get("train_loss")), ""])
        rows.append(["pretrain", "final val loss", fmt(pre.get("val_loss")), ""])
        rows.append(["pretrain", "val perplexity", fmt(pre.get("val_perplexity")), ""])
    evaluation = metrics.get("evaluate")
    if not evaluation:
        rows.append(["evaluate", "perplexity, bits per byte", NOT_RUN, ""])
    else:
        for model, values in evaluation.items():
            if not isinstance(values, dict):
                continue
            stride = values.get("stride")
            ref = f"sliding window, stride {stride}" if stride is not None else ""
            rows.append(
                ["evaluate", f"{model}: val perplexity", fmt(values.get("perplexity")), ref]
            )
            rows.append(
                ["evaluate", f"{model}: bits per byte", fmt(values.get("bits_per_byte")), ""]
            )
    ins = metrics.get("instruct")
    if ins is None:
        rows.append(["instruct", "val loss", NOT_RUN, ""])
    else:
        rows.append(["instruct", "final train loss", fmt(ins.get("train_loss")), ""])
        rows.append(["instruct", "final val loss", fmt(ins.get("val_loss")), ""])
    cls = metrics.get("classify")
    if cls is None:
        rows.append(["classify", "accuracy", NOT_RUN, ""])
    else:
        for split in CLASSIFY_SPLITS:
            value = cls.get(f"{split}_accuracy")
            baseline = cls.get(f"majority_baseline_{split}", cls.get("majority_baseline"))
            ref = f"majority baseline {fmt(baseline)}" if baseline is not None else ""
            rows.append(["classify", f"{split} accuracy", fmt(value), ref])
    return rows


def _scalar_items(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Flatten nested metrics to (dotted key, scalar) pairs."""
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            items.extend(_scalar_items(value, f"{name}."))
        elif isinstance(value, int | float | str | bool) or value is None:
            items.append((name, value))
        elif isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
            items.append((name, ", ".join(map(str, value))))
    return items


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def render_report(
    inputs: ReportInputs, figures: dict[str, list[str]], figures_dir: Path, report_path: Path
) -> str:
    """The report's Markdown text; image links are relative to the report's folder."""
    lines = [f"# {inputs.title}", ""]
    lines += ["## Summary", ""]
    lines += table(["stage", "metric", "value", "reference"], summary_rows(inputs.metrics))
    lines += ["", "## Training curves", ""]
    for stage in STAGES:
        lines.append(f"### {stage}")
        lines.append("")
        names = figures.get(stage)
        if not names:
            lines += [f"{stage}: {NOT_RUN} (no curves in the plots folder)", ""]
            continue
        for name in names:
            link = _rel(figures_dir / name, report_path.parent)
            lines += [f"![{stage} {Path(name).stem.split('_', 1)[1]}]({link})", ""]
    lines += _models_section(inputs.models)
    lines += _metrics_section(inputs.metrics)
    lines += _examples_section(inputs.examples)
    lines += _samples_section(inputs.samples)
    return "\n".join(lines).rstrip() + "\n"


def _models_section(models: list[ModelEntry]) -> list[str]:
    lines = ["## Models", ""]
    if not models:
        return [*lines, f"No model folders given: {NOT_RUN}.", ""]
    header = ["model", "context", "layers", "heads", "width", "vocab", "classes"]
    header += [*PARAM_GROUPS.values(), "total"]
    rows = []
    for entry in models:
        if entry.info is None or entry.params is None:
            rows.append([entry.name, NOT_RUN] + [""] * (len(header) - 2))
            continue
        c = entry.info.config
        head = fmt(entry.params["head"]) if not head_is_tied(c) else "tied to embeddings"
        rows.append(
            [entry.name, fmt(c.block_size), fmt(c.n_layer), fmt(c.n_head), fmt(c.n_embd)]
            + [fmt(c.vocab_size), ", ".join(entry.info.labels) or "-"]
            + [fmt(entry.params[g]) for g in PARAM_GROUPS if g != "head"]
            + [head, fmt(entry.params["total"])]
        )
    return [*lines, "Parameter counts per model:", "", *table(header, rows), ""]


def _metrics_section(metrics: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## All metrics", ""]
    for name in METRIC_FILES:
        lines += [f"### {name}", ""]
        data = metrics.get(name)
        if data is None:
            lines += [f"{NOT_RUN} (no {name}.json)", ""]
            continue
        rows = [[key, fmt(value)] for key, value in _scalar_items(data)]
        lines += [*table(["key", "value"], rows), ""]
    return lines


def _examples_section(examples: list[dict[str, Any]] | None) -> list[str]:
    lines = ["## Instruction examples", ""]
    if examples is None:
        return [*lines, f"{NOT_RUN} (no instruction examples)", ""]
    if not examples:
        return [*lines, "No held-out examples were answered.", ""]
    for number, ex in enumerate(examples, start=1):
        lines += [f"### Example {number}", "", f"**Instruction:** {ex.get('instruction', '')}", ""]
        if ex.get("input"):
            lines += ["**Input:**", "", fenced(str(ex["input"])), ""]
        lines += ["**Reference:**", "", fenced(str(ex.get("reference", ""))), ""]
        lines += ["**Model response:**", "", fenced(str(ex.get("response", ""))), ""]
    return lines


def _samples_section(samples: list[dict[str, Any]] | None) -> list[str]:
    lines = ["## Samples", ""]
    if samples is None:
        return [*lines, f"{NOT_RUN} (no samples)", ""]
    lines += samples_markdown(samples, level=3)
    return lines
