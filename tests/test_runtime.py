"""CPU threads: params, GPTPIPE_THREADS, and a DVC queue job's share of the cores.

The queue's workers are real processes here (a sleeping Python whose command line names
`queue-worker`, as `dvc exp queue-worker` does) with dvc-task's process records beside them;
the end-to-end check with real `dvc queue start -j 2` is tests/stages/test_dvc_queue.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from gptpipe.errors import BadInput
from gptpipe.runtime import queue_jobs, set_threads


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[Path, list[subprocess.Popen[bytes]]]]:
    """A repository root whose queue folder records two live workers, one that has exited
    (return code written), one whose pid is gone, and one live process that is no worker;
    and the copy of the repository a queued experiment runs in."""
    celery = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "celery"
    celery.mkdir(parents=True)
    workspace = celery.parent / "tmpabc123"
    workspace.mkdir()
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    live = [subprocess.Popen([*sleeper, "exp", "queue-worker", f"w{n}"]) for n in (1, 2)]
    other = subprocess.Popen(sleeper)
    gone = subprocess.Popen([sys.executable, "-c", "pass", "queue-worker"])
    gone.wait()
    records = {
        "1": {"pid": live[0].pid, "returncode": None},
        "2": {"pid": live[1].pid, "returncode": None},
        "3": {"pid": live[1].pid, "returncode": 0},
        "4": {"pid": gone.pid, "returncode": None},
        "5": {"pid": other.pid, "returncode": None},
    }
    for name, record in records.items():
        (celery / f"dvc-exp-worker-{name}.json").write_text(json.dumps(record | {"stdin": None}))
    (celery / "dvc-exp-worker-6.json").write_text("{not json")
    try:
        yield tmp_path / "repo", [*live, other]
    finally:
        for process in [*live, other]:
            process.kill()
            process.wait()


def test_a_queued_run_counts_the_live_queue_workers(workers, monkeypatch):
    root, _ = workers
    monkeypatch.setenv("DVC_ROOT", str(root))
    queued = root / ".dvc" / "tmp" / "exps" / "tmpabc123"
    assert queue_jobs(queued) == 2
    assert queue_jobs(queued / "sub" / "folder") == 2  # a stage's wdir inside the copy


def test_a_run_outside_the_queue_is_one_job(workers, monkeypatch):
    root, _ = workers
    monkeypatch.setenv("DVC_ROOT", str(root))
    assert queue_jobs(root) == 1  # `dvc repro` / `dvc exp run` in the workspace itself
    monkeypatch.delenv("DVC_ROOT")
    assert queue_jobs(root / ".dvc" / "tmp" / "exps" / "tmpabc123") == 1  # not under DVC


def test_workers_that_stopped_are_not_counted(workers, monkeypatch):
    root, processes = workers
    monkeypatch.setenv("DVC_ROOT", str(root))
    processes[0].kill()
    processes[0].wait()
    assert queue_jobs(root / ".dvc" / "tmp" / "exps" / "tmpabc123") == 1


def _threads_in_child(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """set_threads(0) in a fresh process (torch's default threads untouched before it)."""
    code = "from gptpipe.runtime import set_threads; print(set_threads(0))"
    full = {k: v for k, v in os.environ.items() if k not in ("DVC_ROOT", "GPTPIPE_THREADS")}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=full | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_queued_job_takes_its_share_of_the_default_threads(workers):
    root, _ = workers
    queued = root / ".dvc" / "tmp" / "exps" / "tmpabc123"
    alone = _threads_in_child(root, DVC_ROOT=str(root))  # in the workspace: torch's default
    default = int(alone.stdout)
    shared = _threads_in_child(queued, DVC_ROOT=str(root))
    assert int(shared.stdout) == max(1, default // 2), shared.stderr  # two workers share it
    one_core = _threads_in_child(queued, DVC_ROOT=str(root), OMP_NUM_THREADS="1")
    assert one_core.stdout.strip() == "1", one_core.stderr  # never below one
    chosen = _threads_in_child(queued, DVC_ROOT=str(root), GPTPIPE_THREADS="5")
    assert chosen.stdout.strip() == "5", chosen.stderr  # the environment variable wins


def test_the_params_key_wins_then_the_environment_variable(monkeypatch):
    monkeypatch.setenv("GPTPIPE_THREADS", "3")
    assert set_threads(2) == 2 == torch.get_num_threads()
    assert set_threads(0) == 3 == torch.get_num_threads()


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_gptpipe_threads_is_bad_input_naming_it(monkeypatch, value):
    monkeypatch.setenv("GPTPIPE_THREADS", value)
    with pytest.raises(BadInput, match=r"^environment variable GPTPIPE_THREADS: .* count >= 1"):
        set_threads(0)
    monkeypatch.setenv("GPTPIPE_THREADS", "")
    set_threads(0)  # empty: unset
