"""The real DAG under real `dvc`, in a temporary git repository, on a tiny configuration.

Shows: a full `dvc repro` leaves the report; a second one runs nothing; a params change
reruns exactly the stages that depend on it; `dvc exp run -S` works and `dvc exp show`,
`dvc metrics show` and `dvc plots show` see the results.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.tiny import corpus_text

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

TINY = {
    # A small local corpus (tests/helpers/tiny.py's grammar) keeps tokenizer, shard and
    # evaluate quick; the instruction and classification sets stay the offline default.
    "data": {"corpus": "tiny_corpus.txt"},
    "tokenizer": {"vocab_size": 320},
    "shard": {"split_chunk_tokens": 256},
    "model": {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32},
    "pretrain": {
        "max_steps": 16,
        "batch_size": 4,
        "eval_interval": 8,
        "eval_batches": 2,
        "warmup_steps": 2,
    },
    "instruct": {
        "max_steps": 4,
        "batch_size": 2,
        "eval_interval": 2,
        "eval_batches": 2,
        "warmup_steps": 1,
        "max_new_tokens": 4,
    },
    "classify": {
        "epochs": 0.0,
        "max_steps": 4,
        "batch_size": 4,
        "eval_interval": 2,
        "eval_batches": 2,
        "warmup_steps": 1,
    },
    "evaluate": {"stride": 32, "batch_size": 64},  # stride = context: fewest windows
    "sample": {"prompts": ["The "], "max_new_tokens": 6, "num_samples": 1},
}
ALL_STAGES = {
    "download",
    "tokenizer",
    "shard",
    "pretrain",
    "weights",
    "finetune-instruct",
    "finetune-classify",
    "evaluate",
    "sample",
    "report",
}

pytestmark = pytest.mark.slow


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def set_params(project: Path, section: str, **values) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("gptpipe", "stages"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "tiny_corpus.txt").write_text(corpus_text(sentences=6000), encoding="utf-8")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(root, "git", "init", "-q")
    run(root, "git", "config", "user.email", "ci@example.invalid")
    run(root, "git", "config", "user.name", "ci")
    run(root, "dvc", "init", "-q")
    run(root, "dvc", "config", "core.analytics", "false")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "tiny project")
    first = run(root, "dvc", "repro")
    assert ran_stages(first.stdout) == ALL_STAGES
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "first run")
    return root


def test_full_repro_writes_the_report_and_metrics(project):
    report = (project / "reports" / "report.md").read_text()
    assert "perplexity" in report.lower()
    metrics = json.loads(run(project, "dvc", "metrics", "show", "--json").stdout)
    flat = json.dumps(metrics)
    for key in ("val_loss", "train_loss", "perplexity", "test_accuracy"):
        assert f'"{key}"' in flat, key
    plots = json.loads(run(project, "dvc", "plots", "show", "--json").stdout)
    axes = {
        "pretraining loss": "loss",
        "pretraining learning rate": "learning rate",
        "classification accuracy": "accuracy",
    }
    for name, y_title in axes.items():
        (plot,) = plots["data"][name]
        titles = re.findall(r'"title": "([^"]*)"', json.dumps(plot["content"]))
        assert "step" in titles and y_title in titles and "y" not in titles, (name, titles)


def metric_columns(node: object, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix]
    return [c for key, value in node.items() for c in metric_columns(value, f"{prefix}.{key}")]


def test_metrics_hold_headline_numbers_and_run_details_go_beside(project):
    metrics = json.loads(run(project, "dvc", "metrics", "show", "--json").stdout)
    files = metrics[""]["data"] if "" in metrics else next(iter(metrics.values()))["data"]
    columns = [c for entry in files.values() for c in metric_columns(entry["data"])]
    assert 10 <= len(columns) < 30, columns
    for noise in ("seconds", "tokens_per_s", "device", "processes", "steps"):
        assert not any(c.endswith(f".{noise}") for c in columns), noise
    details = json.loads((project / "reports" / "runs" / "pretrain.json").read_text())
    assert details["steps"] == TINY["pretrain"]["max_steps"] and details["seconds"] > 0


def test_second_repro_runs_nothing(project):
    again = run(project, "dvc", "repro")
    assert ran_stages(again.stdout) == set()


def test_a_stage_run_alone_gives_the_same_result_as_under_dvc(project, tmp_path):
    alone = tmp_path / "alone"
    run(
        project,
        "gptpipe", "pretrain",
        "--out", str(alone / "model"),
        "--metrics", str(alone / "metrics.json"),
        "--plots", str(alone / "plots"),
        "--checkpoints", str(alone / "checkpoints"),
        "--details", str(alone / "run.json"),
    )  # fmt: skip
    under_dvc = project / "models" / "pretrain"
    for name in ("model.safetensors", "config.json"):
        assert (alone / "model" / name).read_bytes() == (under_dvc / name).read_bytes(), name
    for name in ("train.csv", "val.csv"):
        got = (alone / "plots" / name).read_text().splitlines()
        want = (project / "reports" / "plots" / "pretrain" / name).read_text().splitlines()
        # identical curves but for the timing column
        assert [r.split(",")[:2] for r in got] == [r.split(",")[:2] for r in want], name


def test_sample_temperature_reruns_only_sample_and_report(project):
    set_params(project, "sample", temperature=0.5)
    result = run(project, "dvc", "repro")
    assert ran_stages(result.stdout) == {"sample", "report"}


def test_exp_run_of_a_pretrain_param_reruns_pretrain_and_downstream_and_exp_show_lists_it(project):
    """One experiment shows both: `dvc exp run -S` reruns exactly the stages downstream of
    the changed section, and `dvc exp show` and `gptpipe report --compare` list it."""
    result = run(project, "dvc", "exp", "run", "-S", "pretrain.max_steps=12", "-n", "short")
    assert ran_stages(result.stdout) == ALL_STAGES - {"download", "tokenizer", "shard"}
    shown = run(project, "dvc", "exp", "show", "--json").stdout
    data = json.loads(shown)
    experiments = [e for rev in data for e in (rev.get("experiments") or [])]
    names = [e.get("name") for e in experiments]
    assert "short" in names
    text = json.dumps(data)
    assert '"max_steps": 12' in text
    assert "val_loss" in text and "test_accuracy" in text
    table = run(project, "gptpipe", "report", "--compare").stdout
    assert "| short | 12 |" in table and "| experiment | pretrain.max_steps |" in table


def test_another_base_source_skips_pretraining_in_a_static_dag(project):
    """Runs last: it leaves the workspace on the experiment. Only pretrain reruns (the target),
    in well under the time training took, and leaves the skipped marker."""
    result = run(project, "dvc", "exp", "run", "-S", "base.source=gpt2", "-n", "gpt2", "pretrain")
    assert ran_stages(result.stdout) == {"pretrain"}
    said = result.stdout + result.stderr  # dvc passes the stage's stderr on
    assert "pretrain: skipped, nothing trained (base.source is 'gpt2'" in said
    marker = json.loads((project / "models" / "pretrain" / "skipped.json").read_text())
    assert marker["skipped"] is True and marker["base_source"] == "gpt2"
    assert json.loads((project / "reports" / "metrics" / "pretrain.json").read_text()) == {}
