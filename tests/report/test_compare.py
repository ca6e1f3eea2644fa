"""`gptpipe report --compare`: experiments as a Markdown table, differing params, best first."""

from __future__ import annotations

from typing import Any

from gptpipe.report.compare import compare_table


def revision(rev: str, name: str | None, steps: int, ppl: float, acc: float) -> dict[str, Any]:
    """One revision as `dvc exp show --json` prints it (DVC 3)."""
    params = {"pretrain": {"max_steps": steps, "seed": 1337}, "sample": {"prompts": ["a"]}}
    metrics = {
        "reports/metrics/evaluate.json": {"data": {"base": {"perplexity": ppl}}},
        "reports/metrics/classify.json": {"data": {"test_accuracy": acc}},
    }
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
    assert lines[0] == "| experiment | pretrain.max_steps | base ppl | test accuracy |"
    assert [line.split(" | ")[0] for line in lines[2:6]] == [
        "| long",
        "| workspace",
        "| main",
        "| short",
    ]
    assert "| long | 400 | 20 | 0.9 |" in lines
    assert "Sorted by base ppl (lower is better)." in text
    assert "seed" not in text and "prompts" not in text  # equal everywhere: not shown


def test_no_experiments() -> None:
    assert compare_table([]).startswith("No experiments")
