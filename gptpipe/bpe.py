"""Byte-level BPE training whose result tiktoken encodes exactly as the trainer does.

Text is cut into pre-tokens by a split pattern (GPT-2's or GPT-4's regex); each unique
pre-token is counted once and then handled as a sequence of token ids, starting from its
UTF-8 bytes (ids 0..255 = byte values). Each step merges the most frequent adjacent pair
into a new token (ids 256, 257, ... in learned order = tiktoken ranks).

Two choices keep tiktoken's encoding of the saved ranks identical to the trainer's own
segmentation of the training words:

- Pairs are identified by the *bytes* of their concatenation, not by the two ids. tiktoken
  merges any adjacent pair whose concatenated bytes have a rank, whichever way the bytes
  are split; counting and merging by concatenated bytes makes training do the same.
- Within a word, occurrences are merged left to right, as tiktoken does on equal ranks.

Ties in frequency go to the lexicographically smallest bytes, so training is deterministic.
Pair counts are updated incrementally: only the words that contain the merged pair (an
index maps pair bytes -> word indices) are rewritten, and a heap with lazy invalidation
finds the next best pair.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import regex

from gptpipe.errors import BadInput
from gptpipe.progress import progress

NUM_BYTES = 256


@dataclass
class BpeResult:
    """A trained vocabulary and the trainer's segmentation of every training pre-token."""

    ranks: dict[bytes, int]
    words: dict[str, list[int]] = field(repr=False)
    pattern: str = ""

    @property
    def num_merges(self) -> int:
        return len(self.ranks) - NUM_BYTES

    def encode_known(self, text: str) -> list[int]:
        """The trainer's encoding of `text`, whose pre-tokens must all be training words."""
        return [i for piece in regex.findall(self.pattern, text) for i in self.words[piece]]


def count_pretokens(documents: Iterable[str], pattern: str) -> Counter[str]:
    """How often each pre-token occurs; documents are split separately (never joined)."""
    compiled = regex.compile(pattern)
    counts: Counter[str] = Counter()
    for document in documents:
        counts.update(compiled.findall(document))
    return counts


class _Trainer:
    """The mutable state of one training run (words, pair counts, index, heap)."""

    def __init__(self, counts: Counter[str]) -> None:
        self.vocab: list[bytes] = [bytes([b]) for b in range(NUM_BYTES)]
        # Sorted so that word indices (and with them everything else) are deterministic.
        self.keys = sorted(counts)
        self.words: list[list[int]] = [list(k.encode("utf-8")) for k in self.keys]
        self.freqs: list[int] = [counts[k] for k in self.keys]
        self.stats: dict[bytes, int] = {}
        self.where: dict[bytes, set[int]] = {}
        vocab = self.vocab
        for index, (word, freq) in enumerate(zip(self.words, self.freqs, strict=True)):
            for a, b in itertools.pairwise(word):
                pair = vocab[a] + vocab[b]
                self.stats[pair] = self.stats.get(pair, 0) + freq
                self.where.setdefault(pair, set()).add(index)
        self.heap: list[tuple[int, bytes]] = [(-c, p) for p, c in self.stats.items()]
        heapq.heapify(self.heap)
        self.known: set[bytes] = set(self.vocab)

    def best(self) -> bytes | None:
        """The most frequent pair (smallest bytes on ties), or None when no pair is left."""
        while self.heap:
            negcount, pair = self.heap[0]
            if self.stats.get(pair, 0) == -negcount and negcount < 0:
                return pair
            heapq.heappop(self.heap)
        return None

    def merge(self, pair: bytes) -> None:
        """Add `pair` as a new token and rewrite every word that contains it."""
        new_id = len(self.vocab)
        if pair in self.known:
            raise AssertionError(f"BPE invariant broken: {pair!r} merged twice")
        self.vocab.append(pair)
        self.known.add(pair)
        vocab, stats, where = self.vocab, self.stats, self.where
        changed: set[bytes] = set()
        for index in self.where.pop(pair, set()):
            word = self.words[index]
            freq = self.freqs[index]
            merged: list[int] = []
            i, n = 0, len(word)
            while i < n:
                if i + 1 < n and vocab[word[i]] + vocab[word[i + 1]] == pair:
                    merged.append(new_id)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            delta: dict[bytes, int] = {}
            for a, b in itertools.pairwise(word):
                key = vocab[a] + vocab[b]
                delta[key] = delta.get(key, 0) - 1
            old_keys = set(delta)
            new_keys = set()
            for a, b in itertools.pairwise(merged):
                key = vocab[a] + vocab[b]
                delta[key] = delta.get(key, 0) + 1
                new_keys.add(key)
            for key, d in delta.items():
                if d:
                    stats[key] = stats.get(key, 0) + d * freq
                    changed.add(key)
            for key in old_keys - new_keys:
                if key != pair:
                    where[key].discard(index)
            for key in new_keys - old_keys:
                where.setdefault(key, set()).add(index)
            self.words[index] = merged
        for key in changed:
            count = stats[key]
            if count > 0:
                heapq.heappush(self.heap, (-count, key))
            else:
                del stats[key]
                where.pop(key, None)


def train_bpe(
    documents: Iterable[str], vocab_size: int, pattern: str, show_progress: bool = True
) -> BpeResult:
    """Learn `vocab_size - 257` merges (256 byte tokens + merges + one special token).

    `pattern` is the regex (not its name) that splits text into pre-tokens. A vocabulary
    larger than the corpus supports (no pair left to merge) is BadInput naming
    `tokenizer.vocab_size` and the largest size reached.
    """
    num_merges = vocab_size - NUM_BYTES - 1
    if num_merges < 0:
        raise BadInput(f"params key 'tokenizer.vocab_size': must be >= {NUM_BYTES + 1}")
    trainer = _Trainer(count_pretokens(documents, pattern))
    bar = progress()
    with bar:
        task = bar.add_task("BPE merges", total=num_merges, visible=show_progress)
        for step in range(num_merges):
            pair = trainer.best()
            if pair is None:
                raise BadInput(
                    f"params key 'tokenizer.vocab_size': {vocab_size} is more than the corpus "
                    f"supports; no pair is left to merge after {step} merges (maximum "
                    f"vocab_size {NUM_BYTES + step + 1})"
                )
            trainer.merge(pair)
            if step % 32 == 31 or step == num_merges - 1:
                bar.update(task, completed=step + 1)
    ranks = {token: rank for rank, token in enumerate(trainer.vocab)}
    words = dict(zip(trainer.keys, trainer.words, strict=True))
    return BpeResult(ranks=ranks, words=words, pattern=pattern)
