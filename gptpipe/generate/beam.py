"""Beam search: keep the `num_beams` most likely continuations, step by step.

The rule is the one of `transformers`' beam search (`num_beams=k, do_sample=False`, its
default `early_stopping=False`), tested equal to it: each step scores the 2k best
(beam, token) continuations by summed log-probability; those ending with the stop token,
or reaching the length limit, are offered to the k finished hypotheses with the score
sum / length ** length_penalty (length = new tokens, the stop token included); the best k
others continue. Search ends at the length limit, or once no running beam could beat the
worst finished one (length_penalty > 0 favours long continuations, < 0 short ones).
All k beams share one key/value cache, reordered in place when beams swap.

Besides the stop token, an `ended` predicate over a hypothesis's new ids ends hypotheses
inside the search (the text layer passes one for stop strings, so that a hypothesis is
scored at the length where its text stops, not cut afterwards). The best continuation is
streamed: a token is certain, and yielded, once every hypothesis still in the race (the
live beams and the finished ones) begins with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from gptpipe.generate.decode import Decoding, cache_plan, next_logits, slide_size
from gptpipe.generate.fused_step import FusedStep
from gptpipe.generate.sampling import repetition_penalty, seen_tokens
from gptpipe.model.gpt import GPT

NEG = -1.0e9  # transformers' "impossible" score


Ended = Callable[[Sequence[int]], bool]


def beam_search(
    model: GPT,
    prompt: Sequence[int],
    decoding: Decoding,
    stop_id: int | None = None,
    ended: Ended | None = None,
) -> list[int]:
    """The best continuation of `prompt` (new ids, without the stop token)."""
    return list(beam_stream(model, prompt, decoding, stop_id, ended))


@torch.inference_mode()
def beam_stream(
    model: GPT,
    prompt: Sequence[int],
    decoding: Decoding,
    stop_id: int | None = None,
    ended: Ended | None = None,
) -> Iterator[int]:
    """`beam_search`'s ids, each yielded as soon as no hypothesis left can change it."""
    if not prompt:
        raise ValueError("prompt must hold at least one token")
    was_training = model.training
    model.eval()
    try:
        for token in _search(model, list(prompt), decoding, stop_id, ended):
            if token != stop_id:  # the stop token only ever ends a hypothesis
                yield token
    finally:
        model.train(was_training)


def _agreed(
    running: torch.Tensor,
    running_scores: torch.Tensor,
    finished: torch.Tensor,
    finished_len: torch.Tensor,
    is_finished: torch.Tensor,
    start: int,
    end: int,
) -> list[int]:
    """The ids from `start` (below `end`) that every live beam and finished hypothesis share."""
    live = running[running_scores > NEG / 2, :end]  # beams with a chance (not placeholders)
    done, done_len = finished[is_finished], finished_len[is_finished]
    rows = live if live.size(0) else done
    if not rows.size(0):
        return []
    at = start
    while at < end:
        token = rows[0, at]
        if bool((live[:, at] != token).any()):
            break
        if bool(((done_len <= at) | (done[:, at] != token)).any()):
            break
        at += 1
    return rows[0, start:at].tolist()


def _search(
    model: GPT, prompt: list[int], d: Decoding, stop_id: int | None, ended: Ended | None
) -> Iterator[int]:
    k, n_new, alpha = d.num_beams, d.max_new_tokens, d.length_penalty
    device, plan = next(model.parameters()).device, cache_plan(model)
    block, vocab = model.config.block_size, model.config.vocab_size
    keep = 2 * k  # transformers: max(2, 1 + number of stop ids) * k
    top_k_mask = torch.arange(keep, device=device) < k

    prompt_ids = torch.tensor([prompt], dtype=torch.long, device=device)  # (1, L)
    running = torch.zeros(k, n_new, dtype=torch.long, device=device)  # new ids per beam
    running_scores = torch.full((k,), NEG, device=device)
    running_scores[0] = 0.0  # the k beams start equal: only one may expand at first
    finished = running.clone()
    finished_scores = torch.full((k,), NEG, device=device)
    finished_len = torch.zeros(k, dtype=torch.long, device=device)
    is_finished = torch.zeros(k, dtype=torch.bool, device=device)
    improvable = True
    emitted = 0  # tokens of the best continuation already yielded

    drop = slide_size(model, d.slide)
    window = prompt_ids[:, -block:].expand(k, -1)  # (k, W)
    # room for the prompt and the tokens fed back; the whole context if the window slides
    cache = plan.new_cache(model, k, min(block, window.size(1) + n_new - 1))
    fused = FusedStep.of(model)

    def prefill(ids: torch.Tensor) -> torch.Tensor:
        cache.reset()
        return next_logits(model, ids, cache)  # (k, V)

    logits = prefill(window)
    for cur in range(n_new):
        log_probs = F.log_softmax(logits.float(), dim=-1)  # (k, V)
        if d.repetition_penalty != 1.0:
            history = torch.cat([prompt_ids.expand(k, -1), running[:, :cur]], dim=1)
            log_probs = repetition_penalty(
                log_probs, seen_tokens(history, vocab), d.repetition_penalty
            )
        total = (log_probs + running_scores[:, None]).reshape(-1)  # (k * V,)
        top_scores, top_index = torch.topk(total, keep)  # (2k,)
        parent, token = top_index // vocab, top_index % vocab
        candidates = running[parent]  # (2k, n_new)
        candidates[:, cur] = token
        ends = torch.full_like(token, cur + 1 == n_new, dtype=torch.bool)
        if stop_id is not None:
            ends |= token == stop_id
        if ended is not None:
            ends |= torch.tensor(
                [ended(row[: cur + 1].tolist()) for row in candidates], device=device
            )

        # the best k that did not end continue
        alive_scores = top_scores + ends.float() * NEG
        best = torch.topk(alive_scores, k).indices
        running, running_scores, parents = candidates[best], alive_scores[best], parent[best]

        # those of the first k that ended are offered to the finished hypotheses
        offered = top_scores / ((cur + 1) ** alpha)
        if not improvable:
            offered = offered + NEG
        offered = offered + (~(ends & top_k_mask)).float() * NEG
        merged_scores = torch.cat([finished_scores, offered])
        pick = torch.topk(merged_scores, k).indices
        finished = torch.cat([finished, candidates])[pick]
        finished_scores = merged_scores[pick]
        finished_len = torch.cat([finished_len, torch.full_like(token, cur + 1)])[pick]
        is_finished = torch.cat([is_finished, ends & top_k_mask])[pick]

        # could a running beam still beat the worst finished one? (early_stopping=False)
        best_possible = running_scores[0] / ((cur + 1) ** alpha)
        worst = torch.where(is_finished, finished_scores.min(), torch.tensor(NEG, device=device))
        improvable = improvable and bool((best_possible > worst).any())
        if not improvable or bool(ends.all()):
            break
        agreed = _agreed(
            running, running_scores, finished, finished_len, is_finished, emitted, cur + 1
        )
        yield from agreed
        emitted += len(agreed)

        window = torch.cat([window[parents], running[:, cur : cur + 1]], dim=1)
        if window.size(1) > block:  # the context is full: slide and rebuild
            window = window[:, max(drop, window.size(1) - block) :]
            logits = prefill(window)
        else:
            cache.reorder(parents)
            logits = next_logits(model, running[:, cur : cur + 1], cache, fused)

    yield from finished[0, emitted : int(finished_len[0])].tolist()
