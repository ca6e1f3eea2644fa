"""Logits processors: small pure functions from logits (B, V) to logits (B, V).

Each is the rule of the `transformers` logits processor of the same name (tested equal on
random logits): `repetition_penalty` is RepetitionPenaltyLogitsProcessor, `temperature`
TemperatureLogitsWarper, `top_k` TopKLogitsWarper and `top_p` TopPLogitsWarper. Removed
tokens get -inf, so that a softmax gives them probability 0. `choose` applies them in
transformers' order (penalty, temperature, top-k, top-p) and draws or takes the argmax.
"""

from __future__ import annotations

import torch


def seen_tokens(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, T) token ids -> (B, V) bools: which ids occur in each row. Ids < 0 (padding) or
    >= vocab_size are ignored."""
    valid = (ids >= 0) & (ids < vocab_size)
    slots = torch.where(valid, ids, vocab_size)  # invalid ids land in an extra column
    seen = torch.zeros(ids.size(0), vocab_size + 1, dtype=torch.bool, device=ids.device)
    seen.scatter_(1, slots, True)
    return seen[:, :vocab_size]


def repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty on tokens already in the text (`seen`, from `seen_tokens`): a positive
    logit is divided by `penalty`, a negative one multiplied, so > 1 discourages repeats."""
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def temperature(logits: torch.Tensor, value: float) -> torch.Tensor:
    """Divide by the temperature: < 1 sharpens the distribution, > 1 flattens it."""
    return logits / value


def top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (ties with the k-th are kept too)."""
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k).values[..., -1, None]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the smallest set of most likely tokens whose probability reaches p
    (the most likely token is always kept)."""
    ascending, order = torch.sort(logits, descending=False)
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - p)  # the unlikely tail that sums to at most 1 - p
    remove[..., -1:] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))


def process(
    logits: torch.Tensor,
    temperature_value: float = 1.0,
    k: int = 0,
    p: float = 1.0,
    penalty: float = 1.0,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """All rules in transformers' order; a rule at its neutral value is skipped."""
    if penalty != 1.0 and seen is not None:
        logits = repetition_penalty(logits, seen, penalty)
    if temperature_value not in (0.0, 1.0):
        logits = temperature(logits, temperature_value)
    if k > 0:
        logits = top_k(logits, k)
    if p < 1.0:
        logits = top_p(logits, p)
    return logits


def choose(
    logits: torch.Tensor,
    temperature_value: float = 0.0,
    k: int = 0,
    p: float = 1.0,
    penalty: float = 1.0,
    seen: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The next token of each row, (B,): the argmax at temperature 0 (after the repetition
    penalty), else a draw from the processed distribution with `generator`."""
    logits = logits.float()
    if temperature_value == 0:
        if penalty != 1.0 and seen is not None:
            logits = repetition_penalty(logits, seen, penalty)
        return logits.argmax(dim=-1)
    probs = torch.softmax(process(logits, temperature_value, k, p, penalty, seen), dim=-1)
    draw_device = generator.device if generator is not None else probs.device
    picked = torch.multinomial(probs.to(draw_device), 1, generator=generator)  # (B, 1)
    return picked.squeeze(1).to(logits.device)
