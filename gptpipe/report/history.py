"""The headline metrics of the last committed run, found as `dvc metrics diff` finds them.

The committed `dvc.lock` (`git show HEAD:dvc.lock`) names the md5 of each metrics file the
committed run wrote; the file itself is in the local DVC cache. Reading these directly, rather
than running `dvc metrics diff` from inside the report stage, works while `dvc repro` holds
the repository lock, and needs nothing but git and the cache folder.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import yaml


def _git_show(repo: Path, spec: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "show", spec], cwd=repo, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _cached(repo: Path, md5: str, dvc3: bool) -> str | None:
    """A file's text from the local DVC cache (DVC 3 layout `files/md5/`, or DVC 2's)."""
    cache = repo / ".dvc" / "cache"
    for folder in (cache / "files" / "md5", cache) if dvc3 else (cache, cache / "files" / "md5"):
        path = folder / md5[:2] / md5[2:]
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return None


def committed_metrics(repo: Path, files: dict[str, Path]) -> dict[str, dict[str, Any]] | None:
    """{name: metrics} of the committed run for the metrics files `files` ({name: path});
    None when there is no committed dvc.lock (the first run). A file the committed run did
    not write, or whose content is not in the local cache, is left out."""
    lock_text = _git_show(repo, "HEAD:dvc.lock")
    if lock_text is None:
        return None
    try:
        lock = yaml.safe_load(lock_text) or {}
    except yaml.YAMLError:
        return None
    outs: dict[str, dict[str, Any]] = {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if isinstance(out, dict) and "path" in out and "md5" in out:
                outs[str(out["path"])] = out
    found: dict[str, dict[str, Any]] = {}
    root = repo.resolve()
    for name, path in files.items():
        try:
            rel = path.resolve().relative_to(root).as_posix()
        except ValueError:
            continue
        entry = outs.get(rel)
        if entry is None:
            continue
        text = _cached(repo, str(entry["md5"]), dvc3=entry.get("hash") == "md5")
        if text is None:
            text = _git_show(repo, f"HEAD:{rel}")  # a metrics file kept in git (cache: false)
        if text is None:
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            found[name] = data
    return found


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves as {dotted key: value}, the columns `dvc metrics diff` compares."""
    flat: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def metric_changes(
    current: dict[str, dict[str, Any]], previous: dict[str, dict[str, Any]]
) -> list[tuple[str, str, float | None, float | None, float | None]]:
    """Rows (file, key, old, new, change) over the keys of either run, as `dvc metrics diff`."""
    rows = []
    for name in sorted(set(current) | set(previous)):
        new, old = flatten(current.get(name, {})), flatten(previous.get(name, {}))
        for key in sorted(set(new) | set(old)):
            a, b = old.get(key), new.get(key)
            change = b - a if a is not None and b is not None else None
            if change is not None and math.isnan(change):
                change = None
            rows.append((name, key, a, b, change))
    return rows
