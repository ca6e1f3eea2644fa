"""A model folder's stand-in when its stage had nothing to train.

DVC needs a static DAG: the pretrain stage always runs before `weights`, even when
`base.source` names OpenAI's GPT-2 (or a checkpoint folder) and the pretrained model would be
thrown away. Then the stage trains nothing and writes, in place of the model folder, a folder
holding only `skipped.json` (why, and what was used instead), which the report and
`gptpipe info` recognise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gptpipe.fsutil import atomic_dir

MARKER = "skipped.json"


def write_skipped(folder: Path, stage: str, reason: str, **facts: Any) -> None:
    """Replace `folder` with a skipped marker: {"skipped": true, "stage", "reason", **facts}."""
    record = {"skipped": True, "stage": stage, "reason": reason, **facts}
    with atomic_dir(folder) as tmp:
        (tmp / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def read_skipped(folder: Path) -> dict[str, Any] | None:
    """The marker's record if `folder` is a skipped stand-in, else None."""
    path = folder / MARKER
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and record.get("skipped") is True else None
