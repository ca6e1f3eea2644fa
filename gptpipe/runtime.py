"""Process-level settings: device choice, threads, seeding, the allocator, distributed ranks,
timing a call (for choices measured on the machine they run on), and the per-user cache."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from gptpipe.errors import BadInput, ConfigError

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def resolve_device(name: str, key: str) -> torch.device:
    """The torch device `name` asks for: `auto` is CUDA when present, else the CPU.

    `key` is what named the device, for the one-line error: a params key (`pretrain.device`,
    reported as "params key 'pretrain.device': ...") or a command-line option (`--device`).
    A string torch rejects, a device type the pipeline does not run on, or a CUDA device
    this build or machine does not have is bad input naming it.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device: torch.device | None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise _device_error(key, f"{name!r} is not a device; expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU found"
            raise _device_error(key, f"{name!r} but no CUDA device here ({why}); use cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise _device_error(key, f"{name!r} but only {count} CUDA device(s) here")
    return device


def _device_error(key: str, message: str) -> BadInput:
    """Bad input naming the option (`--device: ...`) or params key that chose the device."""
    return BadInput(f"{key}: {message}") if key.startswith("-") else ConfigError(key, message)


def user_cache_dir() -> Path:
    """The per-user cache (downloaded weights, built kernels): $GPTPIPE_CACHE, else
    $XDG_CACHE_HOME/gptpipe, else ~/.cache/gptpipe."""
    root = os.environ.get("GPTPIPE_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "gptpipe"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


THREADS_ENV = "GPTPIPE_THREADS"


def set_threads(threads: int) -> int:
    """Set torch's intra-op threads and return how many it now uses.

    `threads` > 0 (a params key such as `pretrain.threads`) wins. With 0: the environment
    variable GPTPIPE_THREADS when set; else, in an experiment a DVC queue worker runs, torch's
    default divided among the queue's live workers (`dvc queue start -j 2` on 16 cores: 8
    each, not 16 each fighting over the same cores); else torch's default (the physical cores,
    or OMP_NUM_THREADS).
    """
    chosen = threads if threads > 0 else _env_threads()
    if chosen is None:
        jobs = queue_jobs()
        chosen = max(1, _default_threads() // jobs) if jobs > 1 else None
    if chosen is not None:
        torch.set_num_threads(chosen)
    return torch.get_num_threads()


def _env_threads() -> int | None:
    """GPTPIPE_THREADS as a positive count; unset or empty is None; anything else is bad input."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise BadInput(f"environment variable {THREADS_ENV}: {value!r} is not a count >= 1")
    return int(value)


@functools.cache
def _default_threads() -> int:
    """torch's intra-op threads before this process changed them: what one job alone gets."""
    return torch.get_num_threads()


def queue_jobs(cwd: Path | None = None) -> int:
    """How many experiments the DVC queue runs side by side on this machine, when this
    process is one of them; else 1.

    DVC gives a stage it runs the variable DVC_ROOT, the repository root. A queued experiment
    runs in a copy of the repository under `DVC_ROOT/.dvc/tmp/exps/`, and `dvc queue start
    -j N` starts N workers (celery, one experiment at a time each) whose process records
    dvc-task keeps in `.dvc/tmp/exps/celery/dvc-exp-worker-K.json`: a pid, and a return code
    once the worker has exited. The live workers are the jobs sharing the machine (all are
    started before any of them takes an experiment, so the first job counts them all).
    """
    root = os.environ.get("DVC_ROOT")
    if not root:
        return 1
    exps = Path(root).resolve() / ".dvc" / "tmp" / "exps"
    here = (cwd or Path.cwd()).resolve()
    if not here.is_relative_to(exps):
        return 1
    live = sum(_live_worker(info) for info in (exps / "celery").glob("dvc-exp-worker-*.json"))
    return max(1, live)


def _live_worker(info: Path) -> bool:
    """Whether the queue worker `info` (a dvc-task process record) is still running."""
    try:
        record = json.loads(info.read_text(encoding="utf-8"))
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if record.get("returncode") is not None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:  # a pid reused by an unrelated process since (where /proc tells)
        return b"queue-worker" in cmdline.read_bytes()
    except OSError:
        return not cmdline.parent.parent.exists()


def tune_allocator() -> bool:
    """Keep glibc's malloc from handing large blocks back to the OS (returns whether it could).

    Eager training frees and re-allocates the same large activation buffers every step. By
    default glibc serves each block over 32 MiB-ish with a fresh mmap and unmaps it on free, so
    every step pays again for zero-filled pages: 15-30% of a CPU step goes to page faults. With
    mmap disabled and trimming off, freed memory stays in the heap and is reused. This is what
    the `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...` environment variables do, but applied
    at start-up so nobody has to remember them. The cost is that the process keeps its peak
    heap until it exits, which is what a training process does anyway. A no-op off glibc or
    when the environment already sets either variable (the user's choice wins).
    """
    if not sys.platform.startswith("linux"):
        return False
    if "MALLOC_MMAP_MAX_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and ok
    return ok


@functools.cache
def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 matmuls in hardware (so bf16 autocast pays off):
    CUDA GPUs from Ampere on, CPUs with AVX-512 BF16 or AMX (read from /proc/cpuinfo)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(name: str, device: torch.device) -> str:
    """The autocast dtype a run uses: `auto` is bfloat16 where native, else float32."""
    if name == "auto":
        return "bfloat16" if native_bf16(device) else "float32"
    return name


def median_seconds(call: Callable[[], object], warmups: int = 2, calls: int = 7) -> float:
    """The median wall time of `calls` calls of `call`, after `warmups` untimed ones: how the
    decode-time choices (`layout_seconds`, `plan_seconds`) time the alternatives."""
    for _ in range(warmups):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
