"""One line of the results table (`benchmarks/table.py` renders them; each benchmark's rows
are made from its JSON results by a function of `table.py` or, for the GPU check,
`device_table.py`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """A figure, ours against its reference, their ratio (ours / reference), the target and
    whether it was met (decided from the numbers; None: no target for this figure)."""

    figure: str
    ours: str
    reference: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
