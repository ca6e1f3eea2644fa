"""Classification fine-tuning's outputs (model folder, metrics, curves, scores, run details)
change together or not at all: a failure after training leaves every old one as it was and
none of the new ones (the stage stages all five and renames them in together)."""

from __future__ import annotations

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
    small_fs,
    snapshot_outputs,
)

OUTPUTS = ("out", "metrics", "plots", "scores", "details")
# Two labels a 2-step run cannot tell apart, but enough records for every split.
RECORDS = "".join(
    f"{'pos' if i % 3 else 'neg'}\t{'good' if i % 3 else 'bad'} {i}\n" for i in range(60)
)
PARAMS = {
    "classify": {
        "max_steps": 2,
        "batch_size": 8,
        "eval_interval": 2,
        "eval_batches": 1,
        "warmup_steps": 1,
        "epochs": 0.0,
        "checkpoint_interval": 0,
        "threads": 1,
    }
}


def _paths(root: Path) -> dict[str, Path]:
    return {
        "out": root / "models" / "classify",
        "metrics": root / "metrics" / "classify.json",
        "plots": root / "plots" / "classify",
        "scores": root / "reports" / "scores.json",
        "details": root / "runs" / "classify.json",
    }


def _args(pipeline: dict[str, Path], root: Path, paths: dict[str, Path], *sets: str) -> list:
    return finetune_args("classify", pipeline["model"], root, root / "data.tsv", paths, *sets)


@pytest.fixture(scope="module")
def first_run(pipeline: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The outputs of an earlier, finished run (under the returned folder)."""
    root = tmp_path_factory.mktemp("classify")
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (root / "data.tsv").write_text(RECORDS)
    result = cli(_args(pipeline, root, _paths(root)))
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def old(first_run: Path, tmp_path: Path) -> dict[str, Path]:
    """A copy of the first run's outputs, inputs and params under `tmp_path`."""
    shutil.copytree(first_run, tmp_path, dirs_exist_ok=True)
    paths = _paths(tmp_path)
    assert all(paths[key].exists() for key in OUTPUTS)
    return paths


@pytest.mark.parametrize("step", [6, 10], ids=["first-placed", "last-placed"])
def test_a_failed_commit_after_training_keeps_every_old_output(pipeline, old, tmp_path, step):
    """The renames that put the new outputs in place fail after the first (or after all but
    the last) new one is in: each old output comes back, no new one stays."""
    before = snapshot_outputs(old)
    with commit_fails_at(step) as steps:
        result = cli(_args(pipeline, tmp_path, old, "classify.seed=7"))  # a different model
    assert len(steps) == step  # 5 old outputs set aside, then the new ones placed
    expect_bad_input(result, "injected failure")
    assert snapshot_outputs(old) == before and leftovers(tmp_path) == []


def test_the_outputs_change_together_when_nothing_fails(pipeline, old, tmp_path):
    """The same run without a fault replaces all five (so the cases above could have
    changed them)."""
    before, replaced = snapshot_outputs(old), inodes(old)
    result = cli(_args(pipeline, tmp_path, old, "classify.seed=7"))
    assert result.exit_code == 0, result.output
    after = snapshot_outputs(old)
    assert [key for key in OUTPUTS if after[key] == before[key]] in ([], ["metrics"])
    assert [key for key in OUTPUTS if inodes(old)[key] == replaced[key]] == []
    assert leftovers(tmp_path) == []


def test_an_unwritable_metrics_path_writes_no_model_scores_or_curves(pipeline, old, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    paths = old | {"metrics": blocker / "classify.json"}
    before = snapshot_outputs(old)
    result = cli(_args(pipeline, tmp_path, paths, "classify.seed=7"))
    expect_bad_input(result, f"{paths['metrics']}: cannot write ({blocker} is not a folder)")
    assert blocker.read_text() == "a file, not a folder"
    assert snapshot_outputs(old) == before and leftovers(tmp_path) == []


def test_a_full_disk_at_the_last_write_keeps_every_old_output(pipeline, old, tmp_path):
    """The run details, written last, go to a one-page file system the old details fill."""
    details = old["details"]
    with small_fs(tmp_path / "full", "4k") as disk:
        shutil.copy(details, disk / details.name)
        paths = old | {"details": disk / details.name}
        before = snapshot_outputs(paths)
        result = cli(_args(pipeline, tmp_path, paths, "classify.seed=7"))
        line = expect_bad_input(result, f"{paths['details']}: cannot write (no space left")
        assert ".tmp" not in line  # the output is named, not the staged path written to
        assert snapshot_outputs(paths) == before and leftovers(disk) == []
    assert leftovers(tmp_path) == []
