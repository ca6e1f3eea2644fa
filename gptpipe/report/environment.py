"""The machine and software a run was reported on, collected at report time.

Numbers such as tokens per second and MFU only mean something next to the machine that made
them, and a rerun only reproduces the results with the same versions of the packages that
decide them; so the report states both. Everything here is read from the running system
(/proc, os, torch, importlib.metadata, git); nothing is guessed.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

# The packages whose versions decide the numbers: the math (torch, numpy), the ids (tiktoken,
# regex), the data files (pyarrow, safetensors), and the pipeline runner.
RESULT_PACKAGES = ("torch", "numpy", "tiktoken", "regex", "pyarrow", "safetensors", "dvc")
# CPU features that change what `dtype: auto` picks and how fast training runs.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def cpuinfo(text: str | None = None) -> dict[str, str]:
    """The first processor block of /proc/cpuinfo, or of `text` (empty where there is none)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def _number(value: str | None) -> int | None:
    """A /proc/cpuinfo number field, or None where it is missing or not a number."""
    return int(value) if value is not None and value.strip().isdigit() else None


def _physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    cores = set()
    for block in text.split("\n\n"):
        fields = dict(
            (k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in block.splitlines())
        )
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return len(cores) or None


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(repo: Path) -> dict[str, Any]:
    """The commit checked out and whether tracked files differ from it.

    dvc.lock does not count: DVC rewrites it while the pipeline runs, before the report is
    committed, so it always differs at report time.
    """
    commit = _git(repo, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git(repo, "status", "--porcelain", "--untracked-files=no") or ""
    changed = [line[3:] for line in status.splitlines() if line[3:].strip() != "dvc.lock"]
    return {"commit": commit.strip(), "dirty": bool(changed), "changed": changed[:20]}


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in RESULT_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _gpus() -> list[dict[str, Any]]:
    import torch  # here: the rest of this module needs no torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(
            {
                "name": props.name,
                "memory_bytes": int(props.total_memory),
                "capability": f"{props.major}.{props.minor}",
            }
        )
    return gpus


def collect_environment(repo: Path | None = None) -> dict[str, Any]:
    """Git state, CPU (model name, family and model numbers, feature flags, cores,
    threads), GPUs, RAM, Python and the versions of the packages that decide results, of the
    machine this runs on. The numbers tell CPUs apart that share a name (a KVM guest's "AMD
    EPYC" is Zen 1 or Zen 5)."""
    import torch

    cpu = cpuinfo()
    flags = set(cpu.get("flags", "").split())
    return {
        "git": git_state(repo or Path.cwd()),
        "cpu": {
            "model": cpu.get("model name") or platform.processor() or None,
            "family": _number(cpu.get("cpu family")),
            "model_number": _number(cpu.get("model")),
            "flags": {flag: flag in flags for flag in CPU_FLAGS} if flags else {},
            "cores": _physical_cores(),
            "threads": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "gpus": _gpus(),
        "cuda": torch.version.cuda,
        "memory_bytes": _memory_bytes(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": _versions(),
    }
