"""Fine-tuning data: Alpaca prompts, response-only loss masks, splits, classification."""

import json

import numpy as np
import pytest
import torch
from helpers.mirror import MIRROR, needs_mirror

from gptpipe.config import ClassifyConfig
from gptpipe.errors import BadInput
from gptpipe.finetune.batches import context_length, encode
from gptpipe.finetune.classify import (
    classify_metrics,
    collate_classify,
    majority_accuracy,
    read_labelled,
)
from gptpipe.finetune.instruct import (
    Instruction,
    collate_instructions,
    read_instructions,
    tokenize_instruction,
)
from gptpipe.finetune.splits import split_indices, stratified_split
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.prompts import format_prompt
from gptpipe.tokenizer.folder import load_tokenizer, save_tokenizer
from gptpipe.train.loop import train
from gptpipe.train.losses import IGNORE, classify_loss, masked_lm_loss
from gptpipe.train.precision import evaluating


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    """A real byte-level tokenizer (256 byte tokens + <|endoftext|> = 257 ids)."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer"
    save_tokenizer(path, {bytes([i]): i for i in range(256)}, kind="bpe", pattern="gpt2")
    return load_tokenizer(path)


def test_format_prompt_is_alpaca_with_the_input_block_only_when_given():
    head = (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nAdd 2 and 3."
    )
    assert format_prompt("Add 2 and 3.") == head + "\n\n### Response:\n"
    assert format_prompt("Add 2 and 3.", "numbers") == (
        head + "\n\n### Input:\nnumbers\n\n### Response:\n"
    )


def test_instruction_targets_are_ignored_exactly_on_prompt_tokens(enc):
    record = Instruction("Say hi.", "", "Hi there!")
    eot = enc.n_vocab - 1
    inputs, targets, truncated = tokenize_instruction(enc, record, eot, max_length=1000)
    prompt = encode(enc, format_prompt("Say hi."))
    response = [*encode(enc, "Hi there!"), eot]
    assert not truncated and inputs == (prompt + response)[:-1]
    assert len(targets) == len(inputs)
    n = len(prompt) - 1  # positions whose next token is still part of the prompt
    assert targets[:n] == [IGNORE] * n
    assert targets[n:] == response  # the response and the closing eot, nothing else


def test_long_records_keep_the_end_of_the_prompt_and_some_response(enc):
    eot = enc.n_vocab - 1
    prompt = encode(enc, format_prompt("Say hi."))
    assert len(prompt) == 147  # byte-level: one id per character

    def cut(output: str, max_length: int):
        response = [*encode(enc, output), eot]
        inputs, targets, truncated = tokenize_instruction(
            enc, Instruction("Say hi.", "", output), eot, max_length
        )
        assert len(inputs) == len(targets) <= max_length
        return response, inputs, targets, truncated

    # 147 + 10 ids fit in 161 (max_length 160): nothing is cut.
    assert not cut("Hi there!", 160)[3]
    # 157 ids in 151: the short response stays whole, the prompt loses its first 6 ids.
    response, inputs, targets, truncated = cut("Hi there!", 150)
    assert truncated and inputs == prompt[6:] + response[:-1]
    assert targets == [IGNORE] * 140 + response
    # A long response gets half of the 151 ids (75); the prompt keeps its last 76.
    response, inputs, targets, _ = cut("ab" * 100, 150)
    assert inputs == prompt[-76:] + response[:74] and targets == [IGNORE] * 75 + response[:75]
    # A context much shorter than the prompt: 8 prompt ids, then 8 response ids.
    response, inputs, targets, _ = cut("Hi there!", 15)
    assert enc.decode(inputs[:8]) == "sponse:\n"
    assert inputs == prompt[-8:] + response[:7] and targets == [IGNORE] * 7 + response[:8]


def test_literal_special_token_in_data_is_plain_text(enc):
    ids = encode(enc, "a <|endoftext|> b")
    assert enc.n_vocab - 1 not in ids and enc.decode(ids) == "a <|endoftext|> b"


def test_collate_pads_inputs_with_pad_id_and_targets_with_ignore():
    x, y = collate_instructions([([1, 2, 3], [IGNORE, 3, 4]), ([5], [6])], pad_id=256)
    assert x.tolist() == [[1, 2, 3], [5, 256, 256]]
    assert y.tolist() == [[IGNORE, 3, 4], [6, IGNORE, IGNORE]]
    x, lengths, labels = collate_classify([([1, 2, 3], 1), ([4], 0)], pad_id=9)
    assert x.tolist() == [[1, 2, 3], [4, 9, 9]]
    assert lengths.tolist() == [3, 1] and labels.tolist() == [1, 0]


def test_masked_lm_loss_weights_tokens_not_batches():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=1, n_embd=8)).eval()
    x = torch.randint(0, 20, (2, 6))
    y = x.clone()
    y[1, 1:] = IGNORE  # the second row contributes one token
    with torch.no_grad():
        together = masked_lm_loss(model, [(x, y)])
        split = masked_lm_loss(model, [(x[:1], y[:1]), (x[1:], y[1:])])
        nothing_scored = (x[:1], torch.full_like(y[:1], IGNORE))  # a batch of prompts only
        with_empty = masked_lm_loss(model, [(x, y), nothing_scored])
        _, reference = model(x, y)  # the unfused head: full logits, then cross-entropy
    assert together == pytest.approx(float(reference), rel=1e-5)
    assert split == pytest.approx(together, rel=1e-5)
    assert with_empty == pytest.approx(together, rel=1e-5)


def test_read_instructions_is_the_download_stages_reader_plus_two_records(tmp_path):
    path = tmp_path / "d.json"
    records = [
        {"instruction": "a", "input": "", "output": "b"},
        {"instruction": "c", "input": "d", "output": "e"},
    ]
    path.write_text(json.dumps(records))
    assert read_instructions(path) == [Instruction("a", "", "b"), Instruction("c", "d", "e")]
    # JSON Lines, as the formats module reads them (and a BOM, CRLF line breaks).
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(json.dumps(r) for r in records).encode())
    assert len(read_instructions(path)) == 2
    path.write_text(json.dumps([records[0], {"instruction": "c", "input": ""}]))
    with pytest.raises(BadInput, match=r"d\.json: record 1: missing key\(s\) output"):
        read_instructions(path)
    path.write_text(json.dumps([records[0], {"instruction": " ", "input": "", "output": "x"}]))
    with pytest.raises(BadInput, match=r"d\.json: record 1: empty instruction"):
        read_instructions(path)
    path.write_text("[]")  # no usable record
    with pytest.raises(BadInput, match=r"d\.json: expected a non-empty JSON list"):
        read_instructions(path)
    path.write_text(json.dumps(records[:1]))
    with pytest.raises(BadInput, match=r"d\.json: needs at least 2 records"):
        read_instructions(path)
    path.write_bytes(b"[\xff]")
    with pytest.raises(BadInput, match=r"d\.json: not UTF-8"):
        read_instructions(path)
    with pytest.raises(BadInput, match=r"missing\.json: instruction data not found"):
        read_instructions(tmp_path / "missing.json")


def test_read_labelled_is_the_download_stages_reader(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("ham\thello\n\nspam\twin\tnow\n")
    # The formats module's TSV rule: a tab inside the text becomes a space.
    assert [(r.label, r.text) for r in read_labelled(path)] == [
        ("ham", "hello"),
        ("spam", "win now"),
    ]
    path.write_text("ham\thello\nno tab here\n")
    with pytest.raises(BadInput, match=r"c\.tsv: line 2"):
        read_labelled(path)
    path.write_text("ham\thello\nham\tbye\n")  # one class only
    with pytest.raises(BadInput, match=r"c\.tsv: classification data needs at least 2 labels"):
        read_labelled(path)
    csv_path = tmp_path / "c.csv"
    csv_path.write_text('label,text\nham,"hi, there"\nspam,win\n')
    assert [(r.label, r.text) for r in read_labelled(csv_path)] == [
        ("ham", "hi, there"),
        ("spam", "win"),
    ]
    with pytest.raises(BadInput, match=r"nope\.tsv: classification data not found"):
        read_labelled(tmp_path / "nope.tsv")


def test_splits_are_deterministic_disjoint_and_stratified():
    val, train = split_indices(50, [0.2], seed=3)
    assert len(val) == 10 and len(train) == 40 and not set(val) & set(train)
    assert np.array_equal(split_indices(50, [0.2], seed=3)[0], val)
    assert not np.array_equal(split_indices(50, [0.2], seed=4)[0], val)

    labels = [0] * 80 + [1] * 20
    train, val, test = stratified_split(labels, 0.1, 0.2, seed=7)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(100))
    counts = [
        np.bincount(np.asarray(labels)[part], minlength=2).tolist() for part in (train, val, test)
    ]
    assert counts == [[56, 14], [8, 2], [16, 4]]
    again = stratified_split(labels, 0.1, 0.2, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))


def test_majority_baseline_and_context_length():
    assert majority_accuracy([0, 1, 1, 2], [1, 1, 0, 2]) == 0.5
    assert majority_accuracy([0, 1], [0, 0, 1]) == pytest.approx(2 / 3)  # tie: lowest id
    assert context_length(0, 32, "classify.max_length") == 32
    assert context_length(16, 32, "classify.max_length") == 16
    with pytest.raises(BadInput, match=r"classify\.max_length"):
        context_length(33, 32, "classify.max_length")


def test_classifier_learns_a_separable_toy_set(enc):
    rng = np.random.default_rng(0)
    words = {0: ["apple", "pear", "plum"], 1: ["!!!", "???", "###"]}

    def example(label: int) -> tuple[list[int], int]:
        text = " ".join(rng.choice(words[label], size=rng.integers(1, 5)))
        return encode(enc, text)[:16], label

    train_set = [example(i % 2) for i in range(64)]
    test_set = [example(i % 2) for i in range(32)]
    eot = enc.n_vocab - 1
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=enc.n_vocab, block_size=16, n_layer=2, n_head=2, n_embd=32, n_classes=2
    )
    model = GPT(config)
    cfg = ClassifyConfig(
        max_steps=40,
        epochs=0,
        batch_size=16,
        learning_rate=3e-3,
        min_lr=3e-4,
        warmup_steps=4,
        eval_interval=20,
        eval_batches=2,
        checkpoint_interval=0,
    )
    test_batches = [collate_classify(test_set[s : s + 16], eot) for s in range(0, 32, 16)]

    def validate(m):
        loss, accuracy = classify_metrics(m, test_batches)
        return {"val_loss": loss, "val_accuracy": accuracy}

    def batch_at(i):
        start = (i * 16) % len(train_set)
        return collate_classify(train_set[start : start + 16], eot)

    result = train(model, cfg, batch_at=batch_at, loss_of=classify_loss, validate=validate)
    assert result.val["val_accuracy"] == 1.0
    with evaluating(model, "float32"):
        loss, accuracy = classify_metrics(model, test_batches)
    assert accuracy == 1.0 and loss < 0.2


@needs_mirror
def test_real_data_sets_read(enc):
    records = read_instructions(MIRROR / "instruction-data.json")
    assert len(records) == 1100 and all(r.instruction and r.output for r in records)
    assert sum(1 for r in records if r.input) > 100
    labelled = read_labelled(MIRROR / "SMSSpamCollection")
    assert {r.label for r in labelled} == {"ham", "spam"} and len(labelled) == 5574
    assert sum(r.label == "spam" for r in labelled) == 747
