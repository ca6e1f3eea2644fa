"""The benchmark harness: a worker in a fresh interpreter, its JSON, its peak memory, failures
reported with the worker's stderr, sides alternated."""

import sys
from pathlib import Path

import pytest

from benchmarks.harness import WorkerFailed, alternate, paired_ratio, run_worker, spawn_self

WORKER = Path(__file__).with_name("harness_worker.py")


def worker(*args: object) -> list[str]:
    """argv of harness_worker.py (allocate MB, exit MESSAGE, print TEXT, sleep SECONDS)."""
    return [sys.executable, str(WORKER), *map(str, args)]


def test_a_worker_runs_in_a_fresh_process_and_its_peak_memory_is_measured():
    small = run_worker(worker("allocate", 1))
    # wait4's figure cannot be below this process's own peak (see harness's `hwm`): go above it
    size = int(small.floor_mb) + 200
    large = run_worker(worker("allocate", size), env={"X_B": "set"})
    assert small.data["mb"] == 1 and large.data["env"] == "set" and small.data["env"] is None
    assert small.data["pid"] != large.data["pid"]
    assert small.floor_mb <= small.peak_rss_mb
    assert size <= large.peak_rss_mb < size + 150  # the block, seen by wait4
    assert large.peak_rss_mb - max(small.peak_rss_mb, large.floor_mb) > 150
    assert small.seconds > 0


def test_a_failing_worker_raises_with_its_stderr():
    with pytest.raises(WorkerFailed, match="boom"):
        run_worker(worker("exit", "boom"))
    with pytest.raises(WorkerFailed, match="no JSON"):
        run_worker(worker("print", "not json"))
    with pytest.raises(WorkerFailed, match="timed out"):
        run_worker(worker("sleep", 30), timeout=0.5)


def test_a_module_worker_finds_the_repository_package():
    # bench_train serves its own measurements: a matmul peak, as the training benchmark does
    spec = {"kind": "peak", "dtype": "float32", "threads": 1, "n": 64, "reps": 1}
    assert spawn_self("benchmarks.bench_train", spec).data["gflops"] > 0


def test_alternate_interleaves_the_sides_and_paired_ratio_takes_the_median():
    calls = []
    runs = alternate(
        {"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0}, 3
    )
    assert calls == ["a", "b"] * 3 and runs == {"a": [1.0] * 3, "b": [2.0] * 3}
    assert paired_ratio([1.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0
