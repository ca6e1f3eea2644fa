"""The run report: headline metrics, loss curves as PNG figures, parameter counts, examples.

Everything here reads what earlier stages wrote (metrics JSON, curve CSVs, samples, model
config.json files) and turns it into Markdown; a missing input is reported as "not run"
rather than failing, so the report also works on a partial run. `parameter_breakdown` is
shared with `gptpipe info`.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gptpipe.checkpoint import ModelInfo, read_info
from gptpipe.errors import BadInput
from gptpipe.fsutil import read_json
from gptpipe.model import GPT, GPTConfig

NOT_RUN = "not run"
STAGES = ("pretrain", "instruct", "classify")
METRIC_FILES = ("pretrain", "instruct", "classify", "evaluate")
SPLITS = ("train", "val", "test")

# --------------------------------------------------------------------------- parameters

PARAM_GROUPS = {
    "embeddings": "Embeddings (token + position)",
    "attention": "Attention",
    "mlp": "MLP",
    "layer_norms": "Layer norms",
    "head": "Head",
}


def _group_of(name: str) -> str:
    """The group of a parameter by its GPT-2 name (wte, h.0.attn.c_attn.weight, ...)."""
    if name.startswith(("wte.", "wpe.")):
        return "embeddings"
    if ".attn." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    if name.startswith("ln_f.") or ".ln_1." in name or ".ln_2." in name:
        return "layer_norms"
    if name.startswith(("lm_head.", "score.")):
        return "head"
    raise ValueError(f"parameter {name!r} belongs to no known group")


def parameter_breakdown(model: GPT) -> dict[str, int]:
    """Parameters per group (embeddings, attention, mlp, layer_norms, head) and `total`.

    A tied language-model head shares `wte`'s weight, so it counts once, under embeddings,
    and the head group is 0; a classifier's `score` layer is the head.
    """
    counts = dict.fromkeys(PARAM_GROUPS, 0)
    for name, param in model.named_parameters():  # tied parameters appear once
        counts[_group_of(name)] += param.numel()
    counts["total"] = sum(counts[g] for g in PARAM_GROUPS)
    return counts


def config_breakdown(config: GPTConfig) -> dict[str, int]:
    """`parameter_breakdown` of the model a config describes, without allocating weights."""
    with torch.device("meta"):
        model = GPT(config)
    return parameter_breakdown(model)


def head_is_tied(config: GPTConfig) -> bool:
    """Language models tie the head to `wte`; classifiers have their own `score` head."""
    return config.n_classes == 0


# --------------------------------------------------------------------------- inputs


@dataclass
class ModelEntry:
    """One model folder of the report: its config and parameter breakdown, or absent."""

    name: str
    path: Path
    info: ModelInfo | None
    params: dict[str, int] | None


@dataclass
class ReportInputs:
    """What the report is made of; any part may be missing (None / empty)."""

    title: str
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    curves: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    samples: list[dict[str, Any]] | None = None
    examples: list[dict[str, Any]] | None = None
    models: list[ModelEntry] = field(default_factory=list)


def read_metrics(metrics_dir: Path) -> dict[str, dict[str, Any]]:
    """The metrics JSON files that exist (pretrain, instruct, classify, evaluate)."""
    found: dict[str, dict[str, Any]] = {}
    for name in METRIC_FILES:
        path = metrics_dir / f"{name}.json"
        if path.is_file():
            data = read_json(path)
            if not isinstance(data, dict):
                raise BadInput(f"{path}: expected a JSON object of metrics")
            found[name] = data
    return found


def read_curve(path: Path) -> dict[str, list[float]]:
    """A curve CSV (header row, first column `step`) as columns of floats; empty cells NaN."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise BadInput(f"{path}: file not found") from None
    if not rows or not rows[0] or rows[0][0] != "step":
        raise BadInput(f"{path}: expected a CSV whose first column is 'step'")
    header = rows[0]
    columns: dict[str, list[float]] = {name: [] for name in header}
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise BadInput(f"{path}: line {number} has {len(row)} fields, expected {len(header)}")
        for name, cell in zip(header, row, strict=True):
            try:
                columns[name].append(float(cell) if cell.strip() else math.nan)
            except ValueError:
                raise BadInput(f"{path}: line {number}: {name}={cell!r} is not a number") from None
    return columns


def read_curves(plots_dir: Path) -> dict[str, dict[str, dict[str, list[float]]]]:
    """{stage: {"train"|"val": columns}} for the curve files that exist."""
    curves: dict[str, dict[str, dict[str, list[float]]]] = {}
    for stage in STAGES:
        for split in ("train", "val"):
            path = plots_dir / stage / f"{split}.csv"
            if path.is_file():
                curves.setdefault(stage, {})[split] = read_curve(path)
    return curves


def read_models(paths: Iterable[Path]) -> list[ModelEntry]:
    """Each model folder's config and parameter counts (config.json only, no weights)."""
    entries = []
    for path in paths:
        if (path / "config.json").is_file():
            info = read_info(path)
            entries.append(ModelEntry(path.name, path, info, config_breakdown(info.config)))
        else:
            entries.append(ModelEntry(path.name, path, None, None))
    return entries


def read_list(path: Path | None) -> list[dict[str, Any]] | None:
    """A JSON list of objects (samples, instruction examples), or None if the file is absent."""
    if path is None or not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise BadInput(f"{path}: expected a JSON list of objects")
    return data


# --------------------------------------------------------------------------- figures


def figure_curves(curves: dict[str, dict[str, list[float]]], kind: str) -> list[tuple[str, str]]:
    """The (split, column) pairs to draw for `kind` ("loss" or "accuracy"), e.g. train_loss."""
    pairs = []
    for split in ("train", "val"):
        for column in curves.get(split, {}):
            if column.endswith(f"_{kind}") and any(
                not math.isnan(v) for v in curves[split][column]
            ):
                pairs.append((split, column))
    return pairs


def plot_curves(
    stage: str, curves: dict[str, dict[str, list[float]]], kind: str, out: Path
) -> bool:
    """Draw one stage's `kind` curves against step into the PNG `out`; False if none exist."""
    pairs = figure_curves(curves, kind)
    if not pairs:
        return False
    from matplotlib.figure import Figure  # imported here: `gptpipe info` needs no matplotlib

    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    ax = fig.add_subplot()
    for split, column in pairs:
        steps, values = curves[split]["step"], curves[split][column]
        style = {"marker": "o", "markersize": 3} if split == "val" else {"linewidth": 1}
        ax.plot(steps, values, label=column.replace("_", " "), **style)
    ax.set_xlabel("step")
    ax.set_ylabel(kind)
    ax.set_title(f"{stage}: {kind}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, format="png", metadata={"Software": None})
    return True


def write_figures(
    curves: dict[str, dict[str, dict[str, list[float]]]], folder: Path
) -> dict[str, list[str]]:
    """Draw every stage's loss (and accuracy) figure into `folder`; {stage: [file names]}."""
    made: dict[str, list[str]] = {}
    for stage in STAGES:
        for kind in ("loss", "accuracy"):
            name = f"{stage}_{kind}.png"
            if stage in curves and plot_curves(stage, curves[stage], kind, folder / name):
                made.setdefault(stage, []).append(name)
    return made


# --------------------------------------------------------------------------- Markdown


def fmt(value: Any) -> str:
    """A metric value for a table: ints with separators, floats to 4 significant digits."""
    if value is None:
        return NOT_RUN
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def fenced(text: str) -> str:
    """A fenced code block that survives backticks in the text."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return [line(header), "|" + "|".join("---" for _ in header) + "|", *(line(r) for r in rows)]


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
        for split in SPLITS:
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


def render(
    inputs: ReportInputs, figures: dict[str, list[str]], figures_dir: Path, report_path: Path
) -> str:
    """The report's Markdown text; image links are relative to the report's folder."""
    lines = [f"# {inputs.title}", ""]
    lines += ["## Summary", ""]
    lines += _table(["stage", "metric", "value", "reference"], summary_rows(inputs.metrics))
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
    return [*lines, "Parameter counts per model:", "", *_table(header, rows), ""]


def _metrics_section(metrics: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## All metrics", ""]
    for name in METRIC_FILES:
        lines += [f"### {name}", ""]
        data = metrics.get(name)
        if data is None:
            lines += [f"{NOT_RUN} (no {name}.json)", ""]
            continue
        rows = [[key, fmt(value)] for key, value in _scalar_items(data)]
        lines += [*_table(["key", "value"], rows), ""]
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


def sample_heading(record: dict[str, Any]) -> str:
    """'greedy' or 'sample 2 (temperature 0.8, top-k 40)', with the prompt format if any."""
    method = str(record.get("method", ""))
    if method == "greedy":
        label = "greedy"
    else:
        label = f"{method} (temperature {fmt(record.get('temperature'))}"
        label += f", top-k {record.get('top_k')})" if record.get("top_k") else ")"
    if record.get("format") and record.get("format") != "raw":
        label += f", {record['format']} prompt"
    return label


def samples_markdown(samples: list[dict[str, Any]], level: int = 2) -> list[str]:
    """Samples grouped by model then prompt, each continuation in a code block."""
    lines: list[str] = []
    hashes = "#" * level
    models: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for record in samples:
        by_prompt = models.setdefault(str(record.get("model", "?")), {})
        by_prompt.setdefault(str(record.get("prompt", "")), []).append(record)
    for model, prompts in models.items():
        lines += [f"{hashes} {model}", ""]
        for prompt, records in prompts.items():
            lines += [f"{hashes}# prompt: {prompt!r}", ""]
            for record in records:
                lines += [
                    f"*{sample_heading(record)}*",
                    "",
                    fenced(str(record.get("text", ""))),
                    "",
                ]
    return lines
