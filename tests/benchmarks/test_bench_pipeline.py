"""bench_pipeline's reference: a trivial DAG of our DAG's shape (the same stages, edges and
numbers of deps, params and outs), reproduced by real `dvc`; the full benchmark runs the real
pipeline (`python -m benchmarks.bench_pipeline --quick`, minutes, left to `make bench`)."""

import shutil

import pytest
import yaml

from benchmarks import bench_pipeline as bench
from benchmarks.harness import REPO


def edges(stages: dict[str, dict[str, list[str]]]) -> set[tuple[str, str]]:
    """(upstream, downstream) pairs: a stage depends on a path under another's output."""
    found = set()
    for name, stage in stages.items():
        for dep in stage["deps"]:
            for other, upstream in stages.items():
                if any(dep == out or dep.startswith(out + "/") for out in upstream["outs"]):
                    found.add((other, name))
    return found


@pytest.fixture(scope="module")
def ours():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    return bench.resolved(yaml.safe_load((REPO / "dvc.yaml").read_text()), params)


def test_paths_are_resolved_from_the_vars(ours):
    assert "download" in ours and "report" in ours
    for stage in ours.values():
        assert stage["outs"], stage
        assert not any("${" in p for key in ("deps", "outs") for p in stage[key])
    assert "data/raw/corpus.txt" in ours["tokenizer"]["deps"]
    assert "data/inputs" in ours["download"]["deps"]  # ${data.inputs}, from params.yaml


def test_the_trivial_dag_has_our_shape_and_dvc_finds_nothing_to_do_the_second_time(ours, tmp_path):
    if shutil.which("git") is None:
        pytest.skip("no git")
    trivial = bench.trivial_project(tmp_path, ours)
    spec = yaml.safe_load((trivial / "dvc.yaml").read_text())["stages"]
    shape = {
        name: {"deps": s["deps"], "params": s.get("params", []), "outs": s["outs"]}
        for name, s in spec.items()
    }
    assert list(shape) == list(ours)
    assert edges(shape) == edges(ours)
    for name, stage in ours.items():
        assert len(shape[name]["outs"]) == len(stage["outs"])
        assert len(shape[name]["params"]) == len(stage["params"])
    _, first = bench.dvc(trivial, "repro")
    assert set(bench.ran_stages(first)) == set(ours)
    _, second = bench.dvc(trivial, "repro")
    assert bench.ran_stages(second) == []
