"""The one way the benchmarks measure: each measurement in a fresh interpreter, its result as
JSON, its peak memory from the kernel, sides alternated, medians reported.

Every `benchmarks/bench_*.py` is a module of this package with `main(argv=None) -> dict` (the
results it also prints) and runs as `python -m benchmarks.bench_x [options]` from the
repository root (under `flock /tmp/gptpipe-bench.lock` when the figures matter).

API
---
- `run_worker(argv, *, env=None, timeout=None, expect_json=True) -> Measured`: run one
  command (build it with `python_module`) in a fresh process with the repository on
  PYTHONPATH; `env` entries override the environment (None removes a variable). The worker
  prints its result as one JSON object on its LAST stdout line (anything before is
  ignored). Returns `Measured(data, seconds, peak_rss_mb)`: the parsed
  JSON ({} with `expect_json=False`), the process's wall time, and its peak RSS as `wait4`
  reports it (ru_maxrss; see `hwm` below for its floor, `Measured.floor_mb`). A non-zero
  exit, a timeout or missing JSON raises `WorkerFailed` with the tail of the worker's stderr.
- `python_module(module, *args)`: argv for `python -m module args...`. The benchmarks'
  measurements are modules of `benchmarks.workers` (`python -m benchmarks.workers.x ARGS`,
  each with `main(argv)`, its result printed as JSON): no code runs from a string.
- `serve_worker(argv, measure) -> bool`: the worker side of a script that spawns itself:
  when `argv` is `["--worker", SPEC_JSON]`, print `json.dumps(measure(spec))` and return
  True (the script's main then returns at once); else False.
- `spawn_self(module, spec, **run_worker_options) -> Measured`: run `python -m module
  --worker SPEC_JSON` (the other half of `serve_worker`).
- `alternate(sides, repeats) -> dict[name, list]`: call every side once per repeat, in the
  given order, repeat after repeat (A B A B ...), so slow drifts of the machine hit all
  sides alike; returns each side's results in order.
- `median(values)`; `paired_ratio(numerators, denominators)`: the median of per-repeat
  ratios (cancels drift better than the ratio of two medians).
- `benchmarks.workers.peak.hwm()`: the calling process's peak RSS in bytes (VmHWM, from
  /proc; its module imports nothing), for workers spawned by a large process: Linux's
  ru_maxrss also counts the memory the worker had mapped before its exec, which is the
  spawning process's, so a figure at or below `Measured.floor_mb` (the spawner's own peak
  RSS) says nothing. Run from the command line (`python -m benchmarks...`, a small process)
  the floor is far below the figures.
- `MIRROR`: the offline data sets ($GPTPIPE_MIRROR, else ../shared/mirror); `REPO`.
- `machine() -> str`: the CPU model and its SIMD flags of interest, to print beside figures.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("GPTPIPE_MIRROR", REPO.parent / "shared" / "mirror"))
EOT = "<|endoftext|>"
T = TypeVar("T")


class WorkerFailed(RuntimeError):
    """A measurement's process failed (exit status, timeout, or no JSON result)."""


@dataclass
class Measured:
    """One worker process: its JSON result, wall time and peak resident memory."""

    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    floor_mb: float = 0.0  # the spawning process's peak RSS: peak_rss_mb is never below it


def python_module(module: str, *args: object) -> list[str]:
    return [sys.executable, "-m", module, *map(str, args)]


def _environment(overrides: Mapping[str, str | None] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for key, value in (overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_worker(
    argv: Sequence[str],
    *,
    env: Mapping[str, str | None] | None = None,
    timeout: float | None = None,
    expect_json: bool = True,
) -> Measured:
    """Run `argv` in a fresh process and measure it (see the module docstring).

    Output goes to temporary files (no pipe to drain while it runs) and the peak memory is
    read from `wait4` afterwards: nothing polls the worker, which on a 2-core machine would
    take CPU from the measurement.
    """
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=stdout, stderr=stderr, env=_environment(env))
        timer = threading.Timer(timeout, proc.kill) if timeout else None
        if timer is not None:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            if timer is not None:
                timer.cancel()
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    if proc.returncode != 0:
        why = "timed out" if proc.returncode < 0 and timer is not None else "failed"
        raise WorkerFailed(f"{' '.join(argv[:4])} ... {why} ({proc.returncode}):\n{err[-3000:]}")
    data: dict[str, Any] = {}
    if expect_json:
        lines = out.strip().splitlines()
        try:
            data = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            raise WorkerFailed(f"no JSON result on the last line of:\n{out[-2000:]}") from None
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return Measured(data, seconds, usage.ru_maxrss / 1024, floor)


def serve_worker(argv: Sequence[str], measure: Callable[[dict[str, Any]], dict[str, Any]]) -> bool:
    if len(argv) == 2 and argv[0] == "--worker":
        print(json.dumps(measure(json.loads(argv[1]))))
        return True
    return False


def spawn_self(module: str, spec: dict[str, Any], **options: Any) -> Measured:
    return run_worker(python_module(module, "--worker", json.dumps(spec)), **options)


def alternate(sides: Mapping[str, Callable[[], T]], repeats: int) -> dict[str, list[T]]:
    results: dict[str, list[T]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, side in sides.items():
            results[name].append(side())
    return results


def median(values: Iterable[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    return median(a / b for a, b in zip(numerators, denominators, strict=True))


def machine() -> str:
    """`model name` of the first CPU and which of avx2/avx512*/amx* it has (Linux)."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown machine"
    model = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if "model name" in ln), "?"
    )
    flags_line = next((ln for ln in info.splitlines() if ln.startswith("flags")), "")
    flags = sorted(
        {f for f in flags_line.split() if f == "avx2" or f.startswith(("avx512", "amx"))}
    )
    return f"{model}, {os.cpu_count()} CPUs, {' '.join(flags) or 'no AVX2'}"
