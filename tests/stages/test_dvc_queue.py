"""Queued experiments under real `dvc`: three `dvc exp run --queue -S ...`, `dvc queue start -j
2`, and `dvc exp show` lists three experiments with their metrics. Each job trains with its
share of the cores (gptpipe.runtime.set_threads; the run details record it), and the queued
runs' training checkpoints (written every 4 steps here, while both jobs train) stay in each
run's own copy of the repository: every experiment is exactly the model a run alone with its
params trains, and nothing lands in the workspace's checkpoints/ folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.dvcrepo import run
from helpers.tinydvc import ran_stages, tiny_project

STEPS = (8, 12, 20)  # pretrain.max_steps of the three experiments


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The tiny pipeline with its data, tokenizer, shards and pretrained model committed."""
    root = tiny_project(tmp_path_factory.mktemp("queue"))
    first = run(root, "dvc", "repro", "pretrain")
    assert ran_stages(first.stdout) == {"download", "tokenizer", "shard", "pretrain"}
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "pretrained")
    return root


def _worker_pids(root: Path) -> list[int]:
    """The pids of the queue's workers that dvc-task records as still running."""
    records = (root / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.json")
    found = [json.loads(path.read_text()) for path in records]
    return [r["pid"] for r in found if r.get("returncode") is None and _alive(r["pid"])]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for_queue(root: Path, timeout: float = 600) -> str:
    """`dvc queue status` once nothing is queued or running."""
    deadline = time.monotonic() + timeout
    while True:
        status = run(root, "dvc", "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        assert time.monotonic() < deadline, f"the queue did not finish:\n{status}"
        time.sleep(2)


def _experiments(root: Path) -> dict[str, dict]:
    """`dvc exp show --json`: each named experiment's params and metrics files."""
    shown = json.loads(run(root, "dvc", "exp", "show", "--json").stdout)
    found = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            (rev,) = exp["revs"]
            found[exp["name"]] = rev["data"] | {"sha": rev["rev"]}
    return found


def _default_threads() -> int:
    """torch's threads in a fresh process: what one job alone trains with."""
    code = "import torch; print(torch.get_num_threads())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_three_queued_experiments_run_two_at_a_time_each_with_its_share(project, tmp_path):
    for steps in STEPS:
        queued = run(
            project,
            "dvc", "exp", "run", "--queue", "-n", f"steps{steps}",
            "-S", f"pretrain.max_steps={steps}",
            "-S", "pretrain.checkpoint_interval=4",
            "pretrain",
        )  # fmt: skip
        assert f"Queued experiment 'steps{steps}'" in queued.stdout + queued.stderr
    run(project, "dvc", "queue", "start", "-j", "2")
    try:
        status = _wait_for_queue(project)
    finally:
        run(project, "dvc", "queue", "stop", check=False)
        deadline = time.monotonic() + 120
        while _worker_pids(project) and time.monotonic() < deadline:
            time.sleep(1)
    for steps in STEPS:
        assert f"steps{steps}" in status and "Failed" not in status, status
    assert not _worker_pids(project), "queue workers still running after `dvc queue stop`"

    experiments = _experiments(project)
    assert set(experiments) >= {f"steps{s}" for s in STEPS}, experiments.keys()
    val_loss = {}
    for steps in STEPS:
        data = experiments[f"steps{steps}"]
        params = data["params"]["params.yaml"]["data"]["pretrain"]
        assert params["max_steps"] == steps and params["checkpoint_interval"] == 4
        metrics = data["metrics"]["reports/metrics/pretrain.json"]["data"]
        val_loss[steps] = metrics["pretrain"]["val_loss"]
    # results differ as their params do: more steps, lower validation loss
    assert val_loss[8] > val_loss[12] > val_loss[20], val_loss
    # the queued runs wrote their checkpoints in their own copies of the repository
    assert not (project / "checkpoints").exists()

    share = max(1, _default_threads() // 2)
    for steps in STEPS:
        got = tmp_path / f"queued{steps}"
        sha = experiments[f"steps{steps}"]["sha"]
        for path in ("reports/runs/pretrain.json", "models/pretrain/model.safetensors"):
            run(project, "dvc", "get", ".", path, "--rev", sha, "-o", str(got / Path(path).name))
        details = json.loads((got / "pretrain.json").read_text())
        assert details["steps"] == steps
        assert details["threads"] == share, (steps, details["threads"], share)
        # the same model a run alone trains with these params and threads: no checkpoint of
        # another run was resumed or cut short
        alone = tmp_path / f"alone{steps}"
        run(
            project,
            "gptpipe", "pretrain",
            "-S", f"pretrain.max_steps={steps}",
            "-S", "pretrain.checkpoint_interval=4",
            "-S", f"pretrain.threads={share}",
            "--out", str(alone / "model"),
            "--metrics", str(alone / "metrics.json"),
            "--plots", str(alone / "plots"),
            "--checkpoints", str(alone / "checkpoints"),
            "--details", str(alone / "run.json"),
        )  # fmt: skip
        model = (got / "model.safetensors").read_bytes()
        assert (alone / "model" / "model.safetensors").read_bytes() == model, steps
        metrics = json.loads((alone / "metrics.json").read_text())
        assert metrics["pretrain"]["val_loss"] == val_loss[steps]
