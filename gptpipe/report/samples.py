"""Samples as Markdown: in samples.md one heading per decoding setting with the continuation
in a code block; in the report, tables that put the models side by side. Both name a decoding
setting alike (`sample_heading`).
"""

from __future__ import annotations

import re
from typing import Any

from gptpipe.report.text import fenced, fmt, table


def sample_heading(record: dict[str, Any]) -> str:
    """The decoding setting's name and the rules that shaped the text: 'greedy',
    'sample 2: temperature 0.8, top-k 40', 'nucleus 1: temperature 0.8, top-p 0.9, repetition
    penalty 1.2', 'beam: 4 beams, length penalty 1'; with the prompt format if not raw."""
    method = str(record.get("method", ""))
    name = str(record.get("decoding") or method)
    if method == "beam":
        rules = [f"{record.get('num_beams')} beams"]
        rules.append(f"length penalty {fmt(record.get('length_penalty', 1.0))}")
    elif method == "greedy":
        rules = [] if name == "greedy" else ["greedy"]
    else:
        name += f" {record['sample']}" if record.get("sample") else ""
        rules = [f"temperature {fmt(record.get('temperature'))}"]
        if record.get("top_k"):
            rules.append(f"top-k {record.get('top_k')}")
        if float(record.get("top_p", 1.0)) < 1:
            rules.append(f"top-p {fmt(record.get('top_p'))}")
    if float(record.get("repetition_penalty", 1.0)) != 1:
        rules.append(f"repetition penalty {fmt(record.get('repetition_penalty'))}")
    label = f"{name}: {', '.join(rules)}" if rules else name
    if record.get("format") and record.get("format") != "raw":
        label += f" ({record['format']} prompt)"
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


def code_span(text: str) -> str:
    """Text as inline code that survives backticks; line breaks shown as ⏎."""
    text = " ⏎ ".join(text.split("\n")) if "\n" in text else text
    if not text.strip():
        return "(nothing)"
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def samples_table(samples: list[dict[str, Any]], level: int = 3) -> list[str]:
    """Samples side by side: per prompt (and prompt format) a table with a row per decoding
    setting and draw and a column per model, so the models compare at a glance."""
    lines: list[str] = []
    groups: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
    for record in samples:
        key = (str(record.get("prompt", "")), str(record.get("format") or "raw"))
        setting = sample_heading({**record, "format": "raw"})
        cells = groups.setdefault(key, {}).setdefault(setting, {})
        cells[str(record.get("model", "?"))] = code_span(str(record.get("text", "")))
    for (prompt, prompt_format), rows in groups.items():
        models = list(dict.fromkeys(m for cells in rows.values() for m in cells))
        heading = f"prompt {prompt!r}"
        if prompt_format != "raw":
            heading += f" as an {prompt_format} instruction"
        body = [[setting, *(cells.get(m, "-") for m in models)] for setting, cells in rows.items()]
        lines += [f"{'#' * level} {heading}", "", *table(["decoding", *models], body), ""]
    return lines
