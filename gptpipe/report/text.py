"""Markdown building blocks: numbers, code blocks and tables, as the report prints them."""

from __future__ import annotations

import math
import re
from typing import Any

NOT_RUN = "not run"  # a value whose stage did not run


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


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return [line(header), "|" + "|".join("---" for _ in header) + "|", *(line(r) for r in rows)]
