"""Training curves as CSV files (DVC plots)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from gptpipe.fsutil import write_text
from gptpipe.outputs import folder_kind

# A folder of curves (a training stage's --plots), as gptpipe.outputs recognises it.
CURVES_FOLDER = folder_kind("curves folder", {"train.csv"}, {"val.csv"})


def write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    """Write curve rows as CSV (atomically); columns from the first row, `step` first."""
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
