"""Samples as Markdown: one heading per decoding setting, the continuation in a code block.

Shared by the `sample` stage (samples.md) and the report, so both print samples alike.
"""

from __future__ import annotations

from typing import Any

from gptpipe.report.text import fenced, fmt


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
