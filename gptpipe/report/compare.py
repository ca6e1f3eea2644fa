"""A Markdown table of DVC experiments: the params that differ, the headline metrics, best first.

Input is what `dvc exp show --json` prints: the workspace, the baseline commit(s) and their
experiments, each with params (per params file) and metrics (per metrics file).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

from gptpipe.errors import BadInput
from gptpipe.report.history import flatten
from gptpipe.report.text import fmt, table

# Headline columns, in order: (metrics file stem, dotted key, label, higher is better). The
# first one every row has sorts the table: bits per byte first, the one figure that compares
# across corpora and tokenizers.
HEADLINE = (
    ("evaluate", "base.bits_per_byte", "base bits/byte", False),
    ("pretrain", "pretrain.val_loss", "pretrain val loss (nats/token)", False),
    ("instruct", "instruct.rougeL", "instruct ROUGE-L", True),
    ("classify", "classify.test_accuracy", "classify test accuracy", True),
)
# Params that change what a token is, or which text is scored: per-token losses (and
# perplexities) of rows that differ in them do not compare.
TOKEN_PARAMS = ("data.corpus", "tokenizer.kind", "tokenizer.vocab_size", "tokenizer.min_count")
NO_BASELINE = (
    "Rows without metrics are commits whose dvc.lock was not committed: after `dvc repro`, "
    "`git add dvc.lock && git commit` keeps the run as the baseline experiments compare with."
)


def read_experiments(repo: Path) -> list[dict[str, Any]]:
    """`dvc exp show --json` in `repo`, parsed."""
    try:
        done = subprocess.run(
            ["dvc", "exp", "show", "--json"], cwd=repo, capture_output=True, text=True, timeout=600
        )
    except FileNotFoundError:
        raise BadInput("dvc: command not found (install dvc to compare experiments)") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise BadInput(f"dvc exp show --json in {repo}: {last}")
    data = json.loads(done.stdout)
    if not isinstance(data, list):
        raise BadInput("dvc exp show --json: expected a list of revisions")
    return data


def _rows(entries: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(name, data) of the workspace, each baseline and each experiment."""
    found: list[tuple[str, dict[str, Any]]] = []

    def add(entry: dict[str, Any], fallback: str) -> None:
        data = entry.get("data")
        if isinstance(data, dict) and (data.get("params") or data.get("metrics")):
            rev = str(entry.get("rev") or data.get("rev") or fallback)
            name = entry.get("name") or (rev if rev == "workspace" else rev[:7])
            found.append((str(name), data))

    for entry in entries:
        add(entry, "?")
        for exp in entry.get("experiments") or []:
            revs = exp.get("revs") or [exp]
            head = dict(revs[0])
            head.setdefault("name", exp.get("name"))
            add(head, "exp")
    return found


def _flat_section(data: dict[str, Any], kind: str) -> dict[str, Any]:
    """{file stem or params file: {dotted key: value}} of one revision's params or metrics."""
    out: dict[str, Any] = {}
    for path, content in (data.get(kind) or {}).items():
        values = (content or {}).get("data") or {}
        if kind == "params":
            for section, items in values.items():
                if isinstance(items, dict):
                    for key, value in items.items():
                        out[f"{section}.{key}"] = value
        else:
            out[Path(path).stem] = flatten(values)
    return out


def compare_table(entries: list[dict[str, Any]]) -> str:
    """The Markdown table: one row per revision, the params that differ between them, the
    headline metrics; sorted best first by the first headline metric a row has (rows without
    it last), with notes on what does not compare."""
    rows = _rows(entries)
    if not rows:
        return "No experiments: run `dvc exp run` first.\n"
    params = [_flat_section(data, "params") for _, data in rows]
    metrics = [_flat_section(data, "metrics") for _, data in rows]
    keys = sorted({k for p in params for k in p})
    differ = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in params}) > 1]
    columns = [
        h for h in HEADLINE if any(h[1] in m.get(h[0], {}) for m in metrics)
    ]  # headline metrics some row has

    def value(m: dict[str, Any], h: tuple[str, str, str, bool]) -> float | None:
        v = m.get(h[0], {}).get(h[1])
        return None if v is None or math.isnan(v) else float(v)

    order = list(range(len(rows)))
    key_metric = columns[0] if columns else None
    if key_metric is not None:  # rows without it (no committed run) go last
        sign = -1.0 if key_metric[3] else 1.0
        scored = [value(m, key_metric) for m in metrics]
        order.sort(key=lambda i: (scored[i] is None, sign * (scored[i] or 0.0)))
    header = ["experiment", *differ, *(h[2] for h in columns)]
    body = []
    for i in order:
        cells = [rows[i][0]]
        cells += [_param(params[i].get(k)) for k in differ]
        cells += [
            fmt(value(metrics[i], h)) if value(metrics[i], h) is not None else "-" for h in columns
        ]
        body.append(cells)
    lines = table(header, body)
    notes = [
        f"Sorted by {key_metric[2]} ({'higher' if key_metric[3] else 'lower'} is better)."
        if key_metric is not None
        else "Unsorted: no row has a headline metric."
    ]
    if not differ:
        notes.append("No param differs between these rows.")
    tokens_differ = [k for k in TOKEN_PARAMS if k in differ]
    if tokens_differ:
        notes.append(
            f"The rows differ in {', '.join(tokens_differ)}: losses per token do not compare "
            "across them (a token is another piece of text); bits per byte do."
        )
    if any(not any(value(m, h) is not None for h in columns) for m in metrics):
        notes.append(NO_BASELINE)
    return "\n".join([*lines, "", " ".join(notes)]) + "\n"


def _param(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return fmt(value)
