"""Sliding-window perplexity against brute-force references, and bits per byte."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gptpipe.errors import BadInput
from gptpipe.evaluation import bits_per_byte, perplexity, scored_bytes, windows
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.tokenizer.folder import eot_id, load_tokenizer, save_gpt2

BLOCK = 16


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=61, block_size=BLOCK, n_layer=2, n_head=2, n_embd=32)).eval()


@pytest.fixture(scope="module")
def tokens() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 61, size=83).astype(np.uint16)


def brute_force_nll(model: GPT, tokens: np.ndarray) -> list[float]:
    """NLL of every token after the first, each with its full context up to block_size-1."""
    ids = torch.as_tensor(tokens.astype(np.int64))
    out = []
    with torch.no_grad():
        for i in range(1, len(ids)):
            context = ids[max(0, i - (BLOCK - 1)) : i]
            logits, _ = model(context[None])
            out.append(float(-F.log_softmax(logits[0, -1].double(), dim=-1)[ids[i]]))
    return out


def chunks_nll(model: GPT, tokens: np.ndarray) -> list[float]:
    """Non-overlapping chunks of block_size tokens, each scoring its own next-token steps."""
    ids = torch.as_tensor(tokens.astype(np.int64))
    out = []
    with torch.no_grad():
        for start in range(0, len(ids), BLOCK):
            chunk = ids[start : start + BLOCK]
            if len(chunk) < 2:
                continue
            logits, _ = model(chunk[None, :-1])
            logp = F.log_softmax(logits[0].double(), dim=-1)
            out.extend(float(-logp[j, chunk[j + 1]]) for j in range(len(chunk) - 1))
    return out


@pytest.mark.parametrize("n", [2, 5, 16, 17, 40, 83])
@pytest.mark.parametrize("stride", [1, 3, 8, 15])
def test_windows_score_every_token_after_the_first_exactly_once(n: int, stride: int) -> None:
    scored = []
    for w in windows(n, BLOCK, stride):
        assert w.end - w.begin <= BLOCK
        assert w.begin < w.first < w.end or w.first == w.end
        scored.extend(range(w.first, w.end))
    assert scored == list(range(1, n))


def test_stride_one_equals_brute_force_full_context(model: GPT, tokens: np.ndarray) -> None:
    reference = brute_force_nll(model, tokens)
    result = perplexity(model, tokens, stride=1, batch_size=5)
    assert result["tokens"] == len(tokens) - 1 == len(reference)
    assert result["nll"] == pytest.approx(sum(reference), rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(np.mean(reference)), rel=1e-5)


def test_stride_block_size_equals_non_overlapping_chunks(model: GPT, tokens: np.ndarray) -> None:
    reference = chunks_nll(model, tokens)
    result = perplexity(model, tokens, stride=BLOCK, batch_size=2)
    assert result["tokens"] == len(reference)
    assert result["perplexity"] == pytest.approx(math.exp(np.mean(reference)), rel=1e-5)


def test_intermediate_stride_uses_less_context_than_stride_one(
    model: GPT, tokens: np.ndarray
) -> None:
    """stride 8: token i's context starts at the last window begin before it."""
    ids = torch.as_tensor(tokens.astype(np.int64))
    expected = 0.0
    with torch.no_grad():
        for w in windows(len(ids), BLOCK, 8):
            for i in range(w.first, w.end):
                logits, _ = model(ids[w.begin : i][None])
                expected += float(-F.log_softmax(logits[0, -1].double(), dim=-1)[ids[i]])
    result = perplexity(model, tokens, stride=8, batch_size=3)
    assert result["nll"] == pytest.approx(expected, rel=1e-5)
    assert result["tokens"] == len(tokens) - 1


def test_batch_size_does_not_change_the_result(model: GPT, tokens: np.ndarray) -> None:
    one = perplexity(model, tokens, stride=4, batch_size=1)
    many = perplexity(model, tokens.tolist(), stride=4, batch_size=64)
    assert one["nll"] == pytest.approx(many["nll"], rel=1e-6)
    assert one["windows"] == many["windows"]


def test_bad_stride_and_short_input_are_bad_input(model: GPT, tokens: np.ndarray) -> None:
    with pytest.raises(BadInput, match=r"evaluate\.stride"):
        perplexity(model, tokens, stride=BLOCK + 1)
    with pytest.raises(BadInput, match="at least 2 tokens"):
        perplexity(model, [3], stride=1)
    with pytest.raises(BadInput, match="vocabulary"):
        perplexity(model, [1, 2, 61], stride=1)


def test_bits_per_byte_counts_the_scored_utf8_bytes(tmp_path: Path) -> None:
    save_gpt2(tmp_path)
    enc = load_tokenizer(tmp_path)
    text = "héllo wörld, ünïcode"
    ids = enc.encode_ordinary(text)
    first = enc.decode_bytes(ids[:1])
    assert scored_bytes(enc, ids) == len(text.encode("utf-8")) - len(first)
    # <|endoftext|> separates documents: it is scored but is no text, so it adds no bytes
    with_eot = [*ids, eot_id(enc), *ids]
    assert scored_bytes(enc, with_eot) == 2 * len(text.encode("utf-8")) - len(first)
    assert bits_per_byte(math.log(2) * 40, 10) == pytest.approx(4.0)
    with pytest.raises(BadInput):
        bits_per_byte(1.0, 0)
