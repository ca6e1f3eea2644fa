"""Each logits rule equals the transformers logits processor of the same name."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from gptpipe.generate import sampling

V = 200


def random_logits(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, V, generator=g) * 3


@pytest.mark.parametrize("t", [0.3, 1.0, 1.7])
def test_temperature(t: float) -> None:
    logits = random_logits(0)
    expected = TemperatureLogitsWarper(t)(None, logits.clone())
    torch.testing.assert_close(sampling.temperature(logits, t), expected, rtol=0, atol=0)


@pytest.mark.parametrize("k", [1, 5, 50, V, V + 10])
def test_top_k(k: int) -> None:
    logits = random_logits(1)
    logits[0, :10] = 2.5  # ties with the k-th value are kept by both
    expected = TopKLogitsWarper(k)(None, logits.clone())
    assert torch.equal(sampling.top_k(logits, k), expected)


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9, 1.0])
def test_top_p(p: float) -> None:
    logits = random_logits(2)
    expected = TopPLogitsWarper(p)(None, logits.clone())
    got = sampling.top_p(logits, p)
    assert torch.equal(got, expected)
    assert torch.isfinite(got).sum(-1).min() >= 1  # the most likely token always stays


@pytest.mark.parametrize("penalty", [0.7, 1.3, 2.0])
def test_repetition_penalty(penalty: float) -> None:
    logits = random_logits(3)
    ids = torch.randint(0, V, (4, 30), generator=torch.Generator().manual_seed(4))
    expected = RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
    got = sampling.repetition_penalty(logits, sampling.seen_tokens(ids, V), penalty)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_seen_tokens_ignores_padding() -> None:
    seen = sampling.seen_tokens(torch.tensor([[-1, 3, 3], [5, -1, -1]]), 8)
    assert seen.tolist() == [
        [i == 3 for i in range(8)],
        [i == 5 for i in range(8)],
    ]


def test_choose_greedy_and_seeded_draws() -> None:
    logits = random_logits(5)
    assert torch.equal(sampling.choose(logits), logits.argmax(-1))
    draw = lambda seed: sampling.choose(  # noqa: E731
        logits, 1.0, 20, 0.9, generator=torch.Generator().manual_seed(seed)
    )
    assert torch.equal(draw(1), draw(1))
    allowed = torch.isfinite(sampling.top_p(sampling.top_k(logits, 20), 0.9))
    for seed in range(20):
        picked = draw(seed)
        assert allowed[torch.arange(4), picked].all()


def test_logits_stay_finite_at_the_temperature_floor() -> None:
    """gptpipe.decoding.MIN_TEMPERATURE: logits far larger than a model gives (1e30) stay
    finite divided by it, and sampling draws the top token; below it (1e-37, refused now) a
    logit of 100 already overflows float32 and the distribution is no longer one."""
    from gptpipe.decoding import MIN_TEMPERATURE

    logits = torch.tensor([[1e30, 0.0, -1e30], [100.0, 99.0, 0.0]])
    assert bool(torch.isfinite(sampling.process(logits, MIN_TEMPERATURE)).all())
    picked = sampling.choose(logits, MIN_TEMPERATURE, generator=torch.Generator().manual_seed(0))
    assert picked.tolist() == [0, 0]
    assert not bool(torch.isfinite(sampling.process(logits[1:], 1e-37)).all())


def test_choose_takes_a_top_k_beyond_the_vocabulary_as_all_of_it() -> None:
    """top_k has no upper bound (gptpipe.decoding): a k above V keeps every token, as 0
    does, and draws the same token from the same seed."""
    logits = random_logits(6)
    for k in (V + 1, 2**70):
        drawn = sampling.choose(logits, 1.0, k, generator=torch.Generator().manual_seed(3))
        every = sampling.choose(logits, 1.0, 0, generator=torch.Generator().manual_seed(3))
        assert torch.equal(drawn, every)
