"""Scoring an instruction-tuned model: responses beside their references, means of them."""

from __future__ import annotations

import pytest

from gptpipe.finetune.instruct import Instruction
from gptpipe.finetune.responses import answer_scores, compared


def test_compared_scores_the_tuned_and_the_base_response_against_the_reference() -> None:
    records = [
        Instruction("Name the capital of France.", "", "Paris."),
        Instruction("2+3?", "", "5"),
    ]
    answers = compared(records, ["Paris.", "six"], ["Lyon", "5"])
    assert [a["reference"] for a in answers] == ["Paris.", "5"]
    assert (answers[0]["rougeL"], answers[0]["exact"]) == (pytest.approx(1.0), True)
    assert (answers[0]["base_rougeL"], answers[0]["base_exact"]) == (0.0, False)
    assert (answers[1]["exact"], answers[1]["base_exact"]) == (False, True)
    assert answer_scores(answers) == {
        "test_rougeL": pytest.approx(0.5),
        "base_test_rougeL": pytest.approx(0.5),
        "test_exact": 0.5,
        "base_test_exact": 0.5,
    }
    with pytest.raises(ValueError):  # one response per record
        compared(records, ["Paris."], ["Lyon"])
