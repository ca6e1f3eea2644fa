"""The published protocols' splits (Raschka ch. 6 and 7) and the classifier's scores."""

import numpy as np
import pytest
from helpers.mirror import MIRROR, needs_mirror

from gptpipe.config import ClassifyConfig, InstructConfig
from gptpipe.errors import BadInput
from gptpipe.finetune.classify import read_labelled, scores
from gptpipe.finetune.instruct import RougeL, exact_match, read_instructions
from gptpipe.finetune.splits import (
    balanced_split,
    classify_splits,
    instruct_splits,
    ordered_split,
)
from gptpipe.finetune.trainable import with_epochs


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
    fractions = (cfg.val_fraction, cfg.test_fraction)
    spam = MIRROR / "SMSSpamCollection"
    splits = classify_splits(targets, labels, cfg.protocol, fractions, cfg.seed, spam)
    assert [len(splits[n]) for n in ("train", "val", "test")] == [1045, 149, 300]
    test_labels = [targets[int(i)] for i in splits["test"]]
    assert 120 < sum(test_labels) < 180  # both classes, near balanced


@needs_mirror
def test_alpaca_instructions_split_85_10_5_in_file_order():
    records = read_instructions(MIRROR / "instruction-data.json")
    cfg = InstructConfig()
    splits = instruct_splits(
        len(records), cfg.split, cfg.shuffle, cfg.seed, MIRROR / "instruction-data.json"
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
        cfg = InstructConfig()
        instruct_splits(5, cfg.split, cfg.shuffle, cfg.seed, tmp_path / "d.json")


def test_a_split_leaving_a_class_absent_from_test_is_bad_input(tmp_path):
    targets = [0] * 30 + [1] * 2  # 2 records of class 1: round(2 * 0.2) = 0 in test
    with pytest.raises(
        BadInput, match=r"c\.tsv: class 'spam' \(2 records\) is absent from the test"
    ):
        classify_splits(
            targets, ["ham", "spam"], "stratified", (0.1, 0.2), 1337, tmp_path / "c.tsv"
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


def test_split_scores_and_their_flat_figures() -> None:
    """Whole-split scores of a classifier: the majority baseline from the training labels,
    the untuned accuracy given, the test split's confusion rows; flattened for the run
    details (no loss of the training split: it is the loop's)."""
    import torch

    from gptpipe.finetune.classify import split_figures, split_scores
    from gptpipe.model.gpt import GPT, GPTConfig
    from gptpipe.model.heads import with_classifier

    torch.manual_seed(0)
    model = with_classifier(
        GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=8)), 2
    )
    batch = (torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 1]), torch.tensor([0, 1]))
    splits = {"train": [batch], "val": [batch], "test": [batch]}
    untuned = {"train": 0.25, "val": 0.5, "test": 0.75}
    with torch.no_grad():
        per_split, rows = split_scores(model.eval(), splits, ["a", "b"], [0, 0, 1], untuned)
    assert per_split["test"]["records"] == 2 and per_split["val"]["majority_baseline"] == 0.5
    assert [r["actual"] for r in rows] == ["a", "b"] and per_split["test"][
        "untuned_accuracy"
    ] == 0.75
    figures = split_figures(per_split)
    assert "train_loss" not in figures and figures["test_loss"] == per_split["test"]["loss"]
    assert figures["majority_baseline_train"] == 0.5 and figures["untuned_val_accuracy"] == 0.5
    assert figures["test_macro_recall"] == per_split["test"]["macro"]["recall"]
