"""Instruction fine-tuning's outputs (model folder, metrics, curves, test responses, run
details) change together or not at all, as classification's do (test_classify_outputs.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers.faults import (
    cli,
    commit_fails_at,
    expect_bad_input,
    finetune_args,
    inodes,
    leftovers,
    snapshot_outputs,
)

OUTPUTS = ("out", "metrics", "plots", "responses", "details")
RECORDS = [
    {"instruction": f"Repeat the number {i}.", "input": "", "output": f"{i}"} for i in range(40)
]
PARAMS = {
    "instruct": {
        "max_steps": 2,
        "batch_size": 4,
        "eval_interval": 2,
        "eval_batches": 1,
        "warmup_steps": 1,
        "max_new_tokens": 2,
        "checkpoint_interval": 0,
        "threads": 1,
    }
}


def _paths(root: Path) -> dict[str, Path]:
    return {
        "out": root / "models" / "instruct",
        "metrics": root / "metrics" / "instruct.json",
        "plots": root / "plots" / "instruct",
        "responses": root / "reports" / "responses.json",
        "details": root / "runs" / "instruct.json",
    }


def _args(pipeline: dict[str, Path], root: Path, paths: dict[str, Path], *sets: str) -> list:
    return finetune_args("instruct", pipeline["model"], root, root / "data.json", paths, *sets)


@pytest.fixture(scope="module")
def first_run(pipeline: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("instruct")
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (root / "data.json").write_text(json.dumps(RECORDS))
    result = cli(_args(pipeline, root, _paths(root)))
    assert result.exit_code == 0, result.output
    assert json.loads(_paths(root)["details"].read_text())["wall_seconds"] > 0
    return root


@pytest.fixture
def old(first_run: Path, tmp_path: Path) -> dict[str, Path]:
    shutil.copytree(first_run, tmp_path, dirs_exist_ok=True)
    paths = _paths(tmp_path)
    assert all(paths[key].exists() for key in OUTPUTS)
    return paths


def test_a_failed_commit_after_training_keeps_every_old_output(pipeline, old, tmp_path):
    before = snapshot_outputs(old)
    with commit_fails_at(6):  # 5 old outputs set aside, then the first new one placed
        result = cli(_args(pipeline, tmp_path, old, "instruct.seed=7"))
    expect_bad_input(result, "injected failure")
    assert snapshot_outputs(old) == before and leftovers(tmp_path) == []


def test_an_unwritable_metrics_path_writes_no_model_responses_or_curves(pipeline, old, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    paths = old | {"metrics": blocker / "instruct.json"}
    before = snapshot_outputs(old)
    result = cli(_args(pipeline, tmp_path, paths, "instruct.seed=7"))
    expect_bad_input(result, f"{paths['metrics']}: cannot write ({blocker} is not a folder)")
    assert snapshot_outputs(old) == before and leftovers(tmp_path) == []


def test_the_outputs_change_together_when_nothing_fails(pipeline, old, tmp_path):
    before, replaced = snapshot_outputs(old), inodes(old)
    # New references too: a 2-step model's responses may be empty in both runs.
    records = [r | {"output": f"number {r['output']}"} for r in RECORDS]
    (tmp_path / "data.json").write_text(json.dumps(records))
    result = cli(_args(pipeline, tmp_path, old, "instruct.seed=7"))
    assert result.exit_code == 0, result.output
    after = snapshot_outputs(old)
    assert [key for key in OUTPUTS if after[key] == before[key]] in ([], ["metrics"])
    assert [key for key in OUTPUTS if inodes(old)[key] == replaced[key]] == []
