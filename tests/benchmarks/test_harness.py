"""The benchmark harness: a worker in a fresh interpreter, its JSON, its peak memory, failures
reported with the worker's stderr, sides alternated."""

import pytest

from benchmarks.harness import (
    WorkerFailed,
    alternate,
    paired_ratio,
    python_code,
    run_worker,
    spawn_self,
)

ALLOCATE = r"""
import json, os, sys
block = bytearray(int(sys.argv[1]) * 2**20)  # touched: resident
block[::4096] = b"x" * len(block[::4096])
print("noise before the result")
print(json.dumps({"mb": int(sys.argv[1]), "pid": os.getpid(), "env": os.environ.get("X_B")}))
"""


def test_a_worker_runs_in_a_fresh_process_and_its_peak_memory_is_measured():
    small = run_worker(python_code(ALLOCATE, 1))
    # wait4's figure cannot be below this process's own peak (see VM_HWM): go above it
    size = int(small.floor_mb) + 200
    large = run_worker(python_code(ALLOCATE, size), env={"X_B": "set"})
    assert small.data["mb"] == 1 and large.data["env"] == "set" and small.data["env"] is None
    assert small.data["pid"] != large.data["pid"]
    assert small.floor_mb <= small.peak_rss_mb
    assert size <= large.peak_rss_mb < size + 150  # the block, seen by wait4
    assert large.peak_rss_mb - max(small.peak_rss_mb, large.floor_mb) > 150
    assert small.seconds > 0


def test_a_failing_worker_raises_with_its_stderr():
    with pytest.raises(WorkerFailed, match="boom"):
        run_worker(python_code("import sys; sys.exit('boom')"))
    with pytest.raises(WorkerFailed, match="no JSON"):
        run_worker(python_code("print('not json')"))
    with pytest.raises(WorkerFailed, match="timed out"):
        run_worker(python_code("import time; time.sleep(30)"), timeout=0.5)


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
