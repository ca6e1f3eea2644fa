"""The published protocols' splits (Raschka ch. 6 and 7) and the classifier's scores."""

import numpy as np
import pytest
from helpers.mirror import MIRROR, needs_mirror

from gptpipe.config import ClassifyConfig, InstructConfig
from gptpipe.errors import BadInput
from gptpipe.finetune.classify import read_labelled, scores
from gptpipe.finetune.instruct import RougeL, exact_match, read_instructions
from gptpipe.finetune.splits import balanced_split, ordered_split
from gptpipe.finetune.trainable import with_epochs
from gptpipe.stages import finetune_classify, finetune_instruct


def test_balanced_split_undersamples_to_the_smallest_class_and_cuts_70_10_20():
    labels = [0] * 4827 + [1] * 747  # the SMS Spam Collection's counts
    train, val, test = balanced_split(labels, 0.1, 0.2, seed=123)
    assert (len(train), len(val), len(test)) == (1045, 149, 300)
    kept = np.concatenate([train, val, test])
    assert len(set(kept.tolist())) == 1494
    assert np.bincount(np.asarray(labels)[kept]).tolist() == [747, 747]
    again = balanced_split(labels, 0.1, 0.2, seed=123)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    other = balanced_split(labels, 0.1, 0.2, seed=124)
    assert not np.array_equal(other[2], test)


@needs_mirror
def test_sms_spam_on_the_balanced_protocol_gives_the_books_split_sizes():
    records = read_labelled(MIRROR / "SMSSpamCollection")
    labels = sorted({r.label for r in records})
    targets = [labels.index(r.label) for r in records]
    cfg = ClassifyConfig(protocol="balanced")
    splits = finetune_classify._split_records(targets, labels, cfg, MIRROR / "SMSSpamCollection")
    assert [len(splits[n]) for n in ("train", "val", "test")] == [1045, 149, 300]
    test_labels = [targets[int(i)] for i in splits["test"]]
    assert 120 < sum(test_labels) < 180  # both classes, near balanced


@needs_mirror
def test_alpaca_instructions_split_85_10_5_in_file_order():
    records = read_instructions(MIRROR / "instruction-data.json")
    splits = finetune_instruct._split_records(
        len(records), InstructConfig(), MIRROR / "instruction-data.json"
    )
    assert [len(splits[n]) for n in ("train", "test", "val")] == [935, 110, 55]
    assert splits["test"].tolist() == list(range(935, 1045))  # as the book: data[935:1045]


def test_ordered_split_and_empty_splits_are_bad_input(tmp_path):
    assert [p.tolist() for p in ordered_split(10, [0.6, 0.3, 0.1])] == [
        list(range(6)),
        [6, 7, 8],
        [9],
    ]
    with pytest.raises(BadInput, match=r"d\.json: 5 records leave the test split empty"):
        finetune_instruct._split_records(5, InstructConfig(), tmp_path / "d.json")


def test_a_split_leaving_a_class_absent_from_test_is_bad_input(tmp_path):
    targets = [0] * 30 + [1] * 2  # 2 records of class 1: round(2 * 0.2) = 0 in test
    with pytest.raises(
        BadInput, match=r"c\.tsv: class 'spam' \(2 records\) is absent from the test"
    ):
        finetune_classify._split_records(
            targets, ["ham", "spam"], ClassifyConfig(), tmp_path / "c.tsv"
        )


def test_scores_per_class_and_macro_with_the_confusion_matrix():
    actual = np.array([0, 0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 1, 1, 0])
    s = scores(actual, predicted, ["a", "b", "c"])
    assert s["confusion"] == [[2, 2, 0], [0, 2, 0], [1, 0, 0]]
    assert s["accuracy"] == pytest.approx(4 / 7)
    a, b, c = (s["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"], a["support"]) == (pytest.approx(2 / 3), 0.5, 4)
    assert a["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert (b["precision"], b["recall"], b["f1"]) == (0.5, 1.0, pytest.approx(2 / 3))
    assert (c["precision"], c["recall"], c["f1"]) == (0.0, 0.0, 0.0)  # never predicted
    assert s["macro"]["recall"] == pytest.approx(0.5)
    assert s["macro"]["f1"] == pytest.approx((a["f1"] + b["f1"]) / 3)


def test_epochs_set_max_steps_from_the_training_split():
    cfg = ClassifyConfig(epochs=5, batch_size=8)
    assert with_epochs(cfg, 1045).max_steps == 654  # ceil(5 * 1045 / 8)
    assert with_epochs(ClassifyConfig(epochs=0.5, grad_accum=2), 100).max_steps == 2
    assert with_epochs(ClassifyConfig(max_steps=7, epochs=0), 1045).max_steps == 7


def test_rouge_l_is_the_maintained_scorer_and_exact_match_ignores_spacing():
    rouge = RougeL()
    assert rouge("The cat sat.", "the cat sat") == pytest.approx(1.0)
    assert rouge("cat", "the cat sat") == pytest.approx(0.5)  # P 1, R 1/3
    assert rouge("", "the cat") == 0.0
    assert exact_match(" Paris \n", "Paris") and not exact_match("Paris.", "Paris")
