"""GPT-2's BPE cut down to the tokens a corpus uses (`tokenizer.kind: gpt2` with
`tokenizer.min_count` >= 1), the rest spelled with the tokens kept.

Why: a small model on a small corpus spends most of its compute on the output layer over
GPT-2's 50,257 ids, most of which the corpus never has (Tiny Shakespeare's 302k training
tokens use 11,234 distinct ids; a 4-layer, 128-wide model spends 79 of a step's 91 GFLOP on
the head). Keeping only the tokens the corpus has at least `min_count` times shrinks the head
six-fold and leaves text tokenised as GPT-2 tokenises it wherever a kept token applies.

Ids: the 256 byte values (id = byte value), then the kept multi-byte GPT-2 tokens in GPT-2's
order, then `<|endoftext|>`. Text is encoded by GPT-2's BPE (tiktoken) and each token that
was not kept is replaced by the fewest kept tokens and bytes that spell it (" Northumberland"
-> " North" "umber" "land"), so encoding is lossless: decode(encode(x)) == x for any text, and
every text gets a probability. With `min_count` >= 2 the tokens the corpus has fewer times are
spelled that way in the training data too, so the model learns to spell the rare and unseen
tokens it meets later. Spelling with tokens rather than bytes matters: a held-out rare word
becomes 2.2 pieces instead of 5.3, and in a trial on Tiny Shakespeare (min_count 2, the
seed001 shape) the held-out loss at step 400 was 5.24 nats per GPT-2 token against 5.31.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import tiktoken

from gptpipe.tokenizer.special import EOT
from gptpipe.tokenizer.vocab import WHOLE_TOKEN_PATTERN, WholeTokenEncoding


class GPT2SubsetEncoding(WholeTokenEncoding):
    """GPT-2's tokens kept by a corpus (`kept`: their GPT-2 ids), the 256 bytes for the rest."""

    kind = "gpt2-subset"

    def __init__(self, gpt2: tiktoken.Encoding, kept: Sequence[int], min_count: int) -> None:
        spelled = [gpt2.decode_single_token_bytes(i) for i in range(gpt2.n_vocab - 1)]
        kept = sorted({int(i) for i in kept if len(spelled[int(i)]) > 1})
        tokens = [bytes([b]) for b in range(256)] + [spelled[i] for i in kept]
        self.eot_id = len(tokens)
        super().__init__(
            "gptpipe-gpt2-subset",
            pat_str=WHOLE_TOKEN_PATTERN,
            mergeable_ranks={token: i for i, token in enumerate(tokens)},
            special_tokens={EOT: self.eot_id},
            explicit_n_vocab=len(tokens) + 1,
        )
        self.gpt2 = gpt2
        self.kept = kept
        self.min_count = min_count
        # Each GPT-2 id's id here (-1: dropped; spelled on first use, by `spelling`).
        self._ours = {token: i for i, token in enumerate(tokens)}
        self._longest = max(len(token) for token in tokens)
        self._spelled = spelled
        self._lookup = np.array([self._ours.get(t, -1) for t in spelled], dtype=np.int64)
        self._spellings: dict[int, list[int]] = {}

    def _encode(self, text: str) -> np.ndarray:
        ids = self.gpt2.encode_ordinary(text)
        return self.respell(np.asarray(ids, dtype=np.int64))

    def respell(self, gpt2_ids: np.ndarray) -> np.ndarray:
        """GPT-2 ids (no special tokens) -> our ids: each dropped token becomes its spelling."""
        ours = self._lookup[gpt2_ids]
        dropped = np.flatnonzero(ours < 0)
        if dropped.size == 0:
            return ours.astype(np.uint32)
        spellings = [self.spelling(int(i)) for i in gpt2_ids[dropped]]
        widths = np.array([len(s) for s in spellings], dtype=np.int64)
        lengths = np.ones(ours.size, dtype=np.int64)
        lengths[dropped] = widths
        out = np.repeat(ours, lengths)
        # each dropped token's slots: where its run starts, plus 0..width-1
        starts = (np.cumsum(lengths) - lengths)[dropped]
        within = np.arange(int(widths.sum())) - np.repeat(np.cumsum(widths) - widths, widths)
        out[np.repeat(starts, widths) + within] = np.concatenate(spellings)
        return out.astype(np.uint32)

    def spelling(self, gpt2_id: int) -> list[int]:
        """Our ids for one GPT-2 id: itself if kept, else the fewest kept tokens spelling it."""
        if self._lookup[gpt2_id] >= 0:
            return [int(self._lookup[gpt2_id])]
        found = self._spellings.get(gpt2_id)
        if found is None:
            found = fewest_pieces(self._spelled[gpt2_id], self._ours, self._longest)
            self._spellings[gpt2_id] = found
        return found

    def describe(self) -> dict[str, Any]:
        return {"min_count": self.min_count}


def fewest_pieces(token: bytes, ours: dict[bytes, int], longest: int) -> list[int]:
    """The ids of the fewest tokens of `ours` that spell `token` (which holds every single
    byte, so one always exists); among equally short spellings, the one whose last piece is
    longest, and so on leftwards (deterministic)."""
    n = len(token)
    fewest = [0] + [n + 1] * n  # fewest[i]: pieces spelling token[:i]
    start = [0] * (n + 1)  # where the last of those pieces starts
    for end in range(1, n + 1):
        for begin in range(max(0, end - longest), end):
            if fewest[begin] + 1 < fewest[end] and token[begin:end] in ours:
                fewest[end], start[end] = fewest[begin] + 1, begin
    ids: list[int] = []
    end = n
    while end:
        ids.append(ours[token[start[end] : end]])
        end = start[end]
    return ids[::-1]


def count_gpt2_tokens(gpt2: tiktoken.Encoding, documents: Iterable[str]) -> np.ndarray:
    """How many times each GPT-2 id occurs in the documents (encoded as GPT-2 encodes them)."""
    counts = np.zeros(gpt2.n_vocab, dtype=np.int64)
    batch: list[str] = []
    for document in documents:
        batch.append(document)
        if len(batch) == 64:
            _add_counts(counts, gpt2, batch)
            batch = []
    _add_counts(counts, gpt2, batch)
    return counts


def _add_counts(counts: np.ndarray, gpt2: tiktoken.Encoding, batch: list[str]) -> None:
    ids = [np.asarray(row, dtype=np.int64) for row in gpt2.encode_ordinary_batch(batch)]
    if ids:
        counts += np.bincount(np.concatenate(ids), minlength=counts.size)


def kept_tokens(counts: np.ndarray, min_count: int) -> list[int]:
    """GPT-2 ids the corpus has at least `min_count` times."""
    return np.flatnonzero(counts >= min_count).tolist()
