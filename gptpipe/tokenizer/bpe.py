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

Ties in frequency go to the pair of the oldest tokens (the smallest (left id, right id)),
as in the `tokenizers` trainer, so training is deterministic (and held-out text compresses
slightly better than with a plain bytes order). Pair counts are updated incrementally: only
the words that contain the merged pair (an index maps pair bytes -> word indices) are
rewritten, and a heap with lazy invalidation finds the next best pair.

Counting pre-tokens is the other half of the time; it runs in worker processes on ~1 MB
pieces of the corpus (long documents cut only where every pattern has a pre-token
boundary), so the counts, and with them the vocabulary, do not depend on the worker count.
`benchmarks/bench_bpe.py` compares speed and compression with the `tokenizers` library.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import multiprocessing
import os
import signal
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.pool import AsyncResult

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


# Pieces handed to one counting task: whole documents, or cuts of a long one (~1 MB of text).
TASK_CHARS = 1 << 20

# A cut of a document that every split pattern we ship treats as a pre-token boundary: just
# after a single "\n" that sits between two non-whitespace characters. No pre-token of the
# GPT-2 or GPT-4 pattern holds both that newline and the character after it, nor a
# whitespace run crossing it, and no pattern looks behind; so splitting the two parts
# separately gives exactly the pre-tokens of the whole (the worker count never changes them).
_SAFE_CUT = regex.compile(r"(?<=\S\n)(?=\S)")


def _safe_pieces(document: str, size: int) -> Iterator[str]:
    """`document` in pieces of about `size` characters, cut only at safe boundaries."""
    start = 0
    while len(document) - start > size:
        found = _SAFE_CUT.search(document, start + size)
        if found is None:
            break
        yield document[start : found.start()]
        start = found.start()
    yield document[start:]


def _tasks(documents: Iterable[str], size: int) -> Iterator[list[str]]:
    """Lists of texts of about `size` characters in all (documents, or safe pieces of them)."""
    batch: list[str] = []
    chars = 0
    for document in documents:
        for piece in _safe_pieces(document, size):
            batch.append(piece)
            chars += len(piece)
            if chars >= size:
                yield batch
                batch, chars = [], 0
    if batch:
        yield batch


_worker_pattern: regex.Pattern[str] | None = None
_MASKS = hasattr(signal, "pthread_sigmask")  # POSIX signal masks (not on Windows)


def _set_pattern(pattern: str) -> None:
    global _worker_pattern
    _worker_pattern = regex.compile(pattern)


def _init_worker(pattern: str) -> None:
    """A pool worker: compile the pattern, and leave Ctrl-C to the parent.

    A terminal's Ctrl-C reaches every process of the foreground group, workers included. A
    worker that raised KeyboardInterrupt would print its own traceback and could die holding
    the pool's queue lock (the parent then waits forever), so workers ignore SIGINT: the
    parent gets it, and its `with Pool` exit terminates them. The worker was forked with
    SIGINT blocked (`_sigint_blocked`); ignoring it discards one that arrived meanwhile.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _MASKS:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _set_pattern(pattern)


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Hold SIGINT back from this thread while the pool forks its workers, so that no worker
    can take one before `_init_worker` ignores it (the pool's own threads, started meanwhile,
    keep it blocked). One that arrives meanwhile is delivered to this process on the way
    out, as KeyboardInterrupt. (Where there are no signal masks, Windows, nothing is held.)"""
    if not _MASKS:
        yield
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _count_task(texts: list[str]) -> Counter[str]:
    assert _worker_pattern is not None
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(_worker_pattern.findall(text))
    return counts


def resolve_workers(workers: int) -> int:
    """0 means one per CPU core; negative counts are refused."""
    if workers < 0:
        raise ValueError("workers must be >= 0")
    return workers or os.cpu_count() or 1


def count_pretokens(documents: Iterable[str], pattern: str, workers: int = 1) -> Counter[str]:
    """How often each pre-token occurs; documents are split separately (never joined).

    With `workers` > 1 the documents (long ones cut at safe boundaries, see `_SAFE_CUT`)
    are counted in that many worker processes, streamed ~1 MB at a time so memory stays
    bounded by the counts; the result is the same whatever the worker count.
    """
    workers = resolve_workers(workers)
    if workers == 1:
        _set_pattern(pattern)
        counts: Counter[str] = Counter()
        for texts in _tasks(documents, TASK_CHARS):
            counts.update(_count_task(texts))
        return counts
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    counts = Counter()
    pending: deque[AsyncResult[Counter[str]]] = deque()
    # Tasks are read here, in the caller's thread (so a bad document raises here), with at
    # most two per worker in flight: memory stays bounded whatever the corpus size. Ctrl-C
    # is the parent's alone (see `_init_worker`); the pool is entered before a Ctrl-C held
    # back while it started is raised, so leaving the `with` terminates it either way.
    with contextlib.ExitStack() as stack:
        with _sigint_blocked():
            pool = stack.enter_context(
                context.Pool(workers, initializer=_init_worker, initargs=(pattern,))
            )
        for texts in _tasks(documents, TASK_CHARS):
            pending.append(pool.apply_async(_count_task, (texts,)))
            if len(pending) >= 2 * workers:
                counts.update(pending.popleft().get())
        while pending:
            counts.update(pending.popleft().get())
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
        self.ids: dict[bytes, int] = {token: i for i, token in enumerate(self.vocab)}
        self.ties: dict[bytes, tuple[int, int]] = {}
        self.heap: list[tuple[int, tuple[int, int], bytes]] = [
            (-c, self.tie(p), p) for p, c in self.stats.items()
        ]
        heapq.heapify(self.heap)

    def tie(self, pair: bytes) -> tuple[int, int]:
        """Order among equally frequent pairs: the smallest (left id, right id) over the ways
        the bytes split into two known tokens, fixed when the pair first occurs. Pairs of
        older, shorter tokens win, as in the `tokenizers` trainer; held-out text compresses
        better than with a plain bytes order."""
        key = self.ties.get(pair)
        if key is None:
            ids = self.ids
            key = min(
                (ids[pair[:cut]], ids[pair[cut:]])
                for cut in range(1, len(pair))
                if pair[:cut] in ids and pair[cut:] in ids
            )
            self.ties[pair] = key
        return key

    def best(self) -> bytes | None:
        """The most frequent pair (smallest bytes on ties), or None when no pair is left."""
        while self.heap:
            negcount, _, pair = self.heap[0]
            if self.stats.get(pair, 0) == -negcount and negcount < 0:
                return pair
            heapq.heappop(self.heap)
        return None

    def merge(self, pair: bytes) -> None:
        """Add `pair` as a new token and rewrite every word that contains it."""
        new_id = len(self.vocab)
        if pair in self.ids:
            raise AssertionError(f"BPE invariant broken: {pair!r} merged twice")
        self.vocab.append(pair)
        self.ids[pair] = new_id
        vocab, stats, where, words = self.vocab, self.stats, self.where, self.words
        changed: set[bytes] = set()
        pairwise = itertools.pairwise
        for index in where.pop(pair, ()):
            word = words[index]
            freq = self.freqs[index]
            # Pair keys (concatenated bytes) of the word; merge occurrences left to right.
            olds = [vocab[a] + vocab[b] for a, b in pairwise(word)]
            merged: list[int] = []
            start = 0
            try:
                while True:
                    at = olds.index(pair, start)
                    merged += word[start:at]
                    merged.append(new_id)
                    start = at + 2
            except ValueError:
                merged += word[start:]
            news = [vocab[a] + vocab[b] for a, b in pairwise(merged)]
            for key in olds:
                stats[key] -= freq
            for key in news:
                stats[key] = stats.get(key, 0) + freq
            changed.update(olds)
            changed.update(news)
            old_keys, new_keys = set(olds), set(news)
            for key in old_keys - new_keys:
                if key != pair:
                    where[key].discard(index)
            for key in new_keys - old_keys:
                where.setdefault(key, set()).add(index)
            words[index] = merged
        for key in changed:
            count = stats[key]
            if count > 0:
                heapq.heappush(self.heap, (-count, self.tie(key), key))
            else:
                del stats[key]
                where.pop(key, None)


def train_bpe(
    documents: Iterable[str],
    vocab_size: int,
    pattern: str,
    show_progress: bool = True,
    workers: int = 1,
    extra_specials: int = 0,
) -> BpeResult:
    """Learn `vocab_size - 257 - extra_specials` merges.

    The vocabulary is 256 byte tokens + merges + `<|endoftext|>` + `extra_specials` more
    special tokens (`tokenizer.special_tokens`; only their count matters here, they are
    never merged). `pattern` is the regex (not its name) that splits text into pre-tokens.
    `workers` processes count pre-tokens (0: one per CPU core); the result does not depend
    on it. A vocabulary larger than the corpus supports (no pair left to merge) is BadInput
    naming `tokenizer.vocab_size` and the largest size reached.
    """
    if extra_specials < 0:
        raise ValueError("extra_specials must be >= 0")
    reserved = NUM_BYTES + 1 + extra_specials
    num_merges = vocab_size - reserved
    if num_merges < 0:
        raise BadInput(
            f"params key 'tokenizer.vocab_size': must be >= {reserved} (256 bytes + "
            f"<|endoftext|> + {extra_specials} special tokens)"
        )
    trainer = _Trainer(count_pretokens(documents, pattern, workers))
    bar = progress()
    with bar:
        task = bar.add_task("BPE merges", total=num_merges, visible=show_progress)
        for step in range(num_merges):
            pair = trainer.best()
            if pair is None:
                raise BadInput(
                    f"params key 'tokenizer.vocab_size': {vocab_size} is more than the corpus "
                    f"supports; no pair is left to merge after {step} merges (maximum "
                    f"vocab_size {reserved + step})"
                )
            trainer.merge(pair)
            if step % 32 == 31 or step == num_merges - 1:
                bar.update(task, completed=step + 1)
    ranks = {token: rank for rank, token in enumerate(trainer.vocab)}
    words = dict(zip(trainer.keys, trainer.words, strict=True))
    return BpeResult(ranks=ranks, words=words, pattern=pattern)
