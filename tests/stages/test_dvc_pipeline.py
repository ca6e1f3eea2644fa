"""The real DAG under real `dvc`, in a temporary git repository, on a tiny configuration.

Shows: a full `dvc repro` leaves the report; a second one runs nothing; a params change
reruns exactly the stages that depend on it; an edit of a local data file shows in `dvc
status` and reruns download and what its changed outputs feed; a failed download leaves the
data; `dvc exp run -S` works, and `dvc exp show` (readable at 160 columns), `dvc metrics diff`,
`gptpipe report --compare` and the report's change section compare it with the committed
baseline.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml
from helpers.dvcrepo import run
from helpers.http import serve_folder
from helpers.tinydvc import ALL_STAGES, TINY, ran_stages, tiny_project

# CI (`make test`) runs the design card's main paths here: a full repro, the metrics, a
# second repro, an experiment and its table, the diff against the baseline. The other
# paths are marked slow (`make test-all` runs them).


def set_params(project: Path, section: str, **values) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tiny_project(tmp_path_factory.mktemp("project"))
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
    for key in ("val_loss", "bits_per_byte", "rougeL", "test_accuracy"):
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
    columns = sorted(c for entry in files.values() for c in metric_columns(entry["data"]))
    assert columns == [
        ".base.bits_per_byte",
        ".classify.test_accuracy",
        ".instruct.rougeL",
        ".pretrain.val_loss",
    ]
    details = json.loads((project / "reports" / "runs" / "pretrain.json").read_text())
    assert details["steps"] == TINY["pretrain"]["max_steps"] and details["seconds"] > 0
    assert details["params"]["pretrain"]["max_steps"] == TINY["pretrain"]["max_steps"]


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


@pytest.mark.slow
def test_an_edited_local_data_file_shows_in_status_and_reruns_what_it_feeds(project):
    """Editing a file in data.inputs: `dvc status` names download, and `dvc repro` reruns it
    and only what its changed outputs feed (the labelled set: finetune-classify, and the
    report that reads them all)."""
    labels = project / "data" / "inputs" / "labels.tsv"
    labels.write_text(labels.read_text() + "pos\tgood 999\n", encoding="utf-8")
    status = run(project, "dvc", "status").stdout
    assert "download:" in status and "data/inputs" in status, status
    result = run(project, "dvc", "repro")
    assert ran_stages(result.stdout) == {"download", "finetune-classify", "report"}
    provenance = json.loads((project / "data" / "raw" / "provenance.json").read_text())
    assert provenance["classify"]["counts"]["lines"] == 81
    assert "Data and pipelines are up to date" in run(project, "dvc", "status").stdout
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "more labels")


@pytest.mark.slow
def test_a_file_published_at_a_url_is_followed_the_dvc_way(project, tmp_path):
    """`dvc import-url` records a served file with its checksum into data.inputs; when the
    server has a newer version, `dvc update` fetches it and `dvc status` names download."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "notes.txt").write_text("first version\n")
    with serve_folder(www) as server:
        target = "data/inputs/notes.txt"
        run(project, "dvc", "import-url", f"{server.base}/notes.txt", target)
        run(project, "dvc", "repro")  # data.inputs changed: download reruns (nothing else uses it)
        assert "Data and pipelines are up to date" in run(project, "dvc", "status").stdout
        time.sleep(1.1)  # a new Last-Modified second: the served checksum changes
        (www / "notes.txt").write_text("second version, longer\n")
        run(project, "dvc", "update", f"{target}.dvc")
    assert (project / target).read_text() == "second version, longer\n"
    status = run(project, "dvc", "status").stdout
    assert "download:" in status and "data/inputs" in status, status
    result = run(project, "dvc", "repro")
    assert ran_stages(result.stdout) == {"download", "report"}  # its outputs did not change
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "a served file in data/inputs")


def test_a_failed_download_under_dvc_leaves_the_data_and_the_lock(project):
    """DVC removes a stage's outputs before running it, except persistent ones: data/raw is
    one, so a download that fails (a refused connection) leaves the data whole, and dvc.lock
    still describes it."""
    before = (project / "data" / "raw" / "corpus.txt").read_bytes()
    lock = (project / "dvc.lock").read_text()
    set_params(project, "data", corpus="http://127.0.0.1:9/corpus.txt", retries=1)
    failed = run(project, "dvc", "repro", check=False, timeout=300)
    assert failed.returncode != 0
    assert "http://127.0.0.1:9/corpus.txt: connection failed" in failed.stderr
    assert (project / "data" / "raw" / "corpus.txt").read_bytes() == before
    assert (project / "dvc.lock").read_text() == lock
    run(project, "git", "checkout", "params.yaml")
    assert "Data and pipelines are up to date" in run(project, "dvc", "status").stdout


@pytest.mark.slow
def test_sample_temperature_reruns_only_sample_and_report(project):
    set_params(project, "sample", temperature=0.5)
    result = run(project, "dvc", "repro")
    assert ran_stages(result.stdout) == {"sample", "report"}


def test_exp_run_of_a_pretrain_param_reruns_pretrain_and_downstream_and_exp_show_lists_it(project):
    """One experiment shows both: `dvc exp run -S` reruns exactly the stages downstream of
    the changed section, and `dvc exp show` and `gptpipe report --compare` list it."""
    # the baseline: what ran so far (empty when the slow tests above were left out)
    run(project, "git", "commit", "-qam", "the baseline", "--allow-empty")
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
    header = (
        "| experiment | pretrain.max_steps | base bits/byte | pretrain val loss (nats/token) "
        "| instruct ROUGE-L | classify test accuracy |"
    )
    assert header in table, table
    assert "| short | 12 |" in table
    branch = run(project, "git", "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
    baseline = next(line for line in table.splitlines() if line.startswith(f"| {branch} "))
    assert baseline.startswith(f"| {branch} | 16 |") and " - " not in baseline, table


def test_exp_show_fits_160_columns_with_the_headline_metrics_and_changed_params(project):
    """The README's command line: the experiments with their four headline metrics and the
    params that changed, no column cut to an ellipsis, no line past 160 characters."""
    shown = run(
        project,
        "dvc",
        "exp",
        "show",
        "--no-pager",
        "--only-changed",
        "--drop",
        ".*/",
        COLUMNS="160",
    ).stdout
    lines = shown.rstrip("\n").splitlines()
    assert max(len(line) for line in lines) <= 160, shown
    assert "…" not in shown, shown
    # (a tiny model's ROUGE-L and accuracy may not change: --only-changed leaves those out)
    for column in ("pretrain.val_loss", "base.bits_per_byte", "pretrain.max_steps", "[short]"):
        assert column in shown, (column, shown)


def test_metrics_diff_and_the_report_compare_with_the_committed_run(project):
    """The experiment's workspace against the committed baseline: `dvc metrics diff` and the
    report's change section show the same change of pretrain.val_loss."""
    diff = json.loads(run(project, "dvc", "metrics", "diff", "--json").stdout)
    change = diff["reports/metrics/pretrain.json"]["pretrain.val_loss"]
    assert change["old"] is not None and change["new"] is not None and change["diff"] != 0
    report = (project / "reports" / "report.md").read_text()
    changes = report.split("## Change against the last committed run")[1].split("## ")[0]
    assert "| pretrain | pretrain.val_loss |" in changes, changes
    assert "No committed run" not in changes


@pytest.mark.slow
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
