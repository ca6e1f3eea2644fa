"""`gptpipe report --compare`: experiments as a Markdown table, differing params, best first."""

from __future__ import annotations

from typing import Any

from gptpipe.report.compare import compare_table


def revision(
    rev: str, name: str | None, steps: int, bpb: float | None, acc: float, corpus: str = "stdlib"
) -> dict[str, Any]:
    """One revision as `dvc exp show --json` prints it (DVC 3); `bpb` None: no metrics."""
    params = {
        "pretrain": {"max_steps": steps, "seed": 1337},
        "sample": {"prompts": ["a"]},
        "data": {"corpus": corpus},
    }
    metrics = {
        "reports/metrics/evaluate.json": {"data": {"base": {"bits_per_byte": bpb}}},
        "reports/metrics/classify.json": {"data": {"classify": {"test_accuracy": acc}}},
    }
    if bpb is None:
        metrics = {}
    data = {"rev": rev, "params": {"params.yaml": {"data": params}}, "metrics": metrics}
    return {"rev": rev, "name": name, "data": data}


def test_table_lists_differing_params_and_sorts_best_first() -> None:
    baseline = revision("a" * 40, "main", 100, 40.0, 0.8)
    baseline["experiments"] = [
        {"name": "long", "revs": [revision("b" * 40, "long", 400, 20.0, 0.9)]},
        {"name": "short", "revs": [revision("c" * 40, "short", 50, 60.0, 0.7)]},
    ]
    text = compare_table([revision("workspace", None, 100, 40.0, 0.8), baseline])
    lines = text.splitlines()
    assert lines[0] == (
        "| experiment | pretrain.max_steps | base bits/byte | classify test accuracy |"
    )
    assert [line.split(" | ")[0] for line in lines[2:6]] == [
        "| long",
        "| workspace",
        "| main",
        "| short",
    ]
    assert "| long | 400 | 20 | 0.9 |" in lines
    assert "Sorted by base bits/byte (lower is better)." in text
    assert "seed" not in text and "prompts" not in text  # equal everywhere: not shown
    assert "git add dvc.lock" not in text and "do not compare" not in text


def test_an_uncommitted_baseline_goes_last_and_says_how_to_keep_one() -> None:
    """The main row of a commit without dvc.lock has no metrics: it is listed last (not a
    table of dashes sorted by nothing) with the one line that makes it a baseline."""
    baseline = revision("a" * 40, "main", 100, None, 0.0)
    baseline["experiments"] = [
        {"name": "long", "revs": [revision("b" * 40, "long", 400, 1.5, 0.9)]},
        {"name": "short", "revs": [revision("c" * 40, "short", 50, 2.5, 0.7)]},
    ]
    text = compare_table([baseline])
    rows = [line.split(" | ")[0] for line in text.splitlines()[2:5]]
    assert rows == ["| long", "| short", "| main"]
    assert "| main | 100 | - | - |" in text
    assert "Sorted by base bits/byte" in text and "git add dvc.lock && git commit" in text


def test_rows_of_other_corpora_or_tokenizers_say_that_losses_per_token_do_not_compare() -> None:
    baseline = revision("a" * 40, "main", 100, 1.9, 0.8)
    other = revision("b" * 40, "shakespeare", 100, 2.1, 0.8, corpus="tinyshakespeare")
    baseline["experiments"] = [{"name": "shakespeare", "revs": [other]}]
    text = compare_table([baseline])
    assert "differ in data.corpus: losses per token do not compare" in text
    assert "bits per byte do" in text


def test_no_experiments() -> None:
    assert compare_table([]).startswith("No experiments")
