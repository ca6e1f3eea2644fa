"""Samples as Markdown: one heading per decoding setting, the continuation in a code block.

Shared by the `sample` stage (samples.md) and the report, so both print samples alike.
"""

from __future__ import annotations

from typing import Any

from gptpipe.report.text import fenced, fmt


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
