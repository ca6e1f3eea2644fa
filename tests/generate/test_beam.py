"""Beam search equals transformers' `generate(num_beams=k, do_sample=False)` on the same
weights, with and without hypotheses ending on the stop token."""

from __future__ import annotations

import pytest
import torch
from helpers.gpt2 import converted
from test_decode import peaked

from gptpipe.generate.beam import beam_search, beam_stream
from gptpipe.generate.decode import Decoding, generate_ids

PROMPT = [3, 14, 15, 9, 6]


@pytest.fixture(scope="module")
def models():
    hf = peaked(2, n_positions=64, vocab_size=64, scale=2.0)
    return hf, converted(hf)


def reference(hf, k: int, n: int, alpha: float, eos: int | None) -> list[int]:
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([PROMPT]),
            max_new_tokens=n,
            num_beams=k,
            do_sample=False,
            length_penalty=alpha,
            eos_token_id=eos,
            pad_token_id=63,
        )
    new = out[0, len(PROMPT) :].tolist()
    if eos is not None and eos in new:
        new = new[: new.index(eos)]
    return new


@pytest.mark.parametrize(("k", "alpha"), [(2, 1.0), (4, 1.0), (3, 0.0), (4, -1.0), (4, 2.0)])
def test_beam_search_equals_transformers(models, k: int, alpha: float) -> None:
    hf, model = models
    d = Decoding(max_new_tokens=12, num_beams=k, length_penalty=alpha)
    unstopped = beam_search(model, PROMPT, d)
    results = []
    for eos in (None, unstopped[2], unstopped[0]):  # no stop, then stops on the way
        ours = beam_search(model, PROMPT, d, stop_id=eos)
        assert ours == reference(hf, k, 12, alpha, eos), (k, alpha, eos)
        results.append(ours)
    assert results[0] != results[1] or results[0] != results[2]  # the stops mattered


def test_length_penalty_changes_what_wins(models) -> None:
    _, model = models
    stop = beam_search(model, PROMPT, Decoding(12, num_beams=4))[2]
    short = beam_search(model, PROMPT, Decoding(12, num_beams=4, length_penalty=-1.0), stop)
    long = beam_search(model, PROMPT, Decoding(12, num_beams=4, length_penalty=2.0), stop)
    assert len(short) < len(long)


def test_one_beam_is_greedy_and_beams_beat_greedy_likelihood(models) -> None:
    _, model = models
    greedy = generate_ids(model, [PROMPT], Decoding(10))[0]
    assert beam_search(model, PROMPT, Decoding(10, num_beams=1)) == greedy
    beams = beam_search(model, PROMPT, Decoding(10, num_beams=4))

    def log_likelihood(new: list[int]) -> float:
        ids = torch.tensor([PROMPT + new])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids)[0][0, :-1], -1)
        return float(
            logp[torch.arange(len(PROMPT) - 1, ids.size(1) - 1), ids[0, len(PROMPT) :]].sum()
        )

    assert log_likelihood(beams) >= log_likelihood(greedy) - 1e-4


def test_beam_search_slides_past_the_context(models) -> None:
    _, model = models  # context 64
    out = beam_search(model, PROMPT * 10, Decoding(max_new_tokens=40, num_beams=3))
    assert len(out) == 40


def test_an_ended_predicate_ends_hypotheses_as_the_stop_token_does(models) -> None:
    _, model = models
    d = Decoding(max_new_tokens=12, num_beams=4, length_penalty=-1.0)  # short ones win
    free = beam_search(model, PROMPT, d)
    for stop in (free[2], free[0]):
        by_token = beam_search(model, PROMPT, d, stop_id=stop)  # = transformers (above)
        by_predicate = beam_search(model, PROMPT, d, ended=lambda ids, s=stop: ids[-1] == s)
        stopped = len(by_token) < d.max_new_tokens
        # a hypothesis the predicate ends keeps its last id
        assert by_predicate == ([*by_token, stop] if stopped else by_token)
    assert stopped


def test_the_best_continuation_streams_before_the_search_ends(models) -> None:
    _, model = models
    calls = []
    hook = model.lm_head.register_forward_hook(lambda *_: calls.append(1))
    try:
        d = Decoding(max_new_tokens=30, num_beams=3)
        stream = beam_stream(model, PROMPT, d)
        first = next(stream)
        calls_at_first = len(calls)
        rest = list(stream)
    finally:
        hook.remove()
    assert [first, *rest] == beam_search(model, PROMPT, d)
    assert calls_at_first < len(calls) / 2  # yielded while most of the steps were still ahead
