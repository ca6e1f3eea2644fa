"""Continuous batching: every active request of one model decodes in one batched step.

One thread owns the model. Requests wait in a queue; between steps the thread admits as many
as there are free rows (each of a request's `n` continuations takes a row): a request's
prompt is prefilled on its own, its first token drawn, and its keys and values placed in a
row of the `RowCache`. Every step then feeds each active row its last token in one forward
pass, draws each row's next token by its own request's settings and generator, and sends
the new text to the request. A row is freed when its continuation stops (<|endoftext|>, a
stop string, its token limit) or its request is cancelled (a client that went away), and
the next request takes it at the following step. Sequences of any length share a step.

The decoding is the pipeline's own: the model as `gptpipe.generate.decode.for_decoding`
prepares it, `gptpipe.generate.sampling.choose` for each token, `TextStream` for the text
and its stop strings, and, when a row's context is full, the same slide as `gptpipe
generate` (drop the oldest tokens, prefill the rest again).

Nothing here is asynchronous: a request gives `send`, a function the decoding thread calls
with each event (the web layer passes one that hands events to its event loop).

Which thread decodes matters on the CPU. torch's OpenMP threads spin between parallel
regions only while the process has no more of them than cores; a second team (one per
thread that runs parallel work) makes every team sleep between regions, and waking costs
~50 us per operation, ~1.5 ms per token of the benchmark's model on 2 cores (2.3 -> 3.8 ms).
So `decode(engines)` runs every model's engine on the calling thread, one step of each in
turn: `gptpipe serve` decodes on the main thread, the one that loaded the models, and
answers HTTP on another. `Engine.start()` runs one engine on a thread of its own (tests).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import tiktoken
import torch
import torch.nn.functional as F

from gptpipe.decoding import Decoding
from gptpipe.errors import BadInput
from gptpipe.generate.decode import cache_plan, next_logits, slide_size
from gptpipe.generate.fused_step import FusedStep
from gptpipe.generate.sampling import choose, seen_tokens
from gptpipe.generate.text import TextStream
from gptpipe.model.gpt import GPT, KVCache
from gptpipe.serve.rows import RowCache
from gptpipe.tokenizer.folder import eot_id


class Busy(BadInput):
    """The queue of waiting requests is full."""


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Token:
    """One new token of continuation `index`: the text it releases (possibly empty: a
    character still incomplete, or text that may begin a stop string), its id, and with
    logprobs asked for, its log-probability and the most likely alternatives."""

    index: int
    text: str
    token: int
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Finish:
    """Continuation `index` ended: `reason` is "stop" (<|endoftext|> or a stop string) or
    "length" (its token limit); `tokens` it generated; `text` released at the end."""

    index: int
    reason: str
    tokens: int
    text: str = ""


@dataclass(frozen=True)
class Prompt:
    """The prompt's own tokens and their log-probabilities (the first has none), sent first
    when a request echoes its prompt with logprobs."""

    tokens: tuple[int, ...]
    logprobs: tuple[float | None, ...]
    top: tuple[tuple[tuple[int, float], ...], ...]


@dataclass(frozen=True)
class Failed:
    """The request could not be answered (an error inside the engine); `message` says why."""

    message: str


Event = Token | Finish | Prompt | Failed


# --------------------------------------------------------------------------- requests


@dataclass
class Job:
    """One request: its prompt ids, how to decode, how many continuations (`n`), the seed of
    their draws (None: a random one), how many alternatives to report per token (None: no
    logprobs), whether to score the prompt itself, and where its events go."""

    prompt: list[int]
    decoding: Decoding
    send: Callable[[Event], None]
    n: int = 1
    seed: int | None = None
    logprobs: int | None = None
    prompt_logprobs: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Stop decoding this request: its rows are freed at the next step."""
        self.cancelled.set()


@dataclass
class _Sequence:
    """One continuation in a row: its ids so far (prompt and generated; the last one is not
    in the cache yet), its text stream, its generator and the ids it has seen."""

    job: Job
    index: int
    ids: list[int]
    stream: TextStream
    generator: torch.Generator | None
    seen: torch.Tensor | None
    generated: int = 0


# --------------------------------------------------------------------------- the engine


class Engine:
    """Continuous batching over `rows` rows for one model (prepared by `for_decoding`).
    `decode([engine, ...])` (or `start()`: on a thread of its own) runs it; `submit(job)`
    queues a request; `close()` lets the requests in flight finish, then stops it. Engines
    decoded together share `wake`, the condition their `submit` and `close` notify."""

    def __init__(
        self,
        model: GPT,
        encoding: tiktoken.Encoding,
        rows: int = 16,
        max_queue: int = 256,
        wake: threading.Condition | None = None,
    ) -> None:
        self.model = model.eval()
        self.encoding = encoding
        self.eot = eot_id(encoding)
        self.block = model.config.block_size
        device = next(model.parameters()).device
        self.plan = cache_plan(model)
        self.cache = RowCache(
            model.config, rows, self.block, device, self.plan.dtype, self.plan.kernel
        )
        self.fused = FusedStep.of(self.model)  # steps of up to 4 rows, where it applies
        self.rows: list[_Sequence | None] = [None] * rows
        self.max_queue = max_queue
        self.queue: deque[Job] = deque()
        self.lock = wake or threading.Condition()
        self.closing = False
        self.thread: threading.Thread | None = None
        self.steps = 0  # batched steps taken (for /health and the benchmark)

    # ------------------------------------------------------------- outside the thread

    def start(self) -> Engine:
        """Decode on a thread of this engine's own (see the module docstring for the cost)."""
        self.thread = threading.Thread(target=decode, args=([self],), name="gptpipe-engine")
        self.thread.daemon = True
        self.thread.start()
        return self

    def submit(self, job: Job) -> None:
        """Queue `job`; Busy when the queue is full, BadInput when closing."""
        with self.lock:
            if self.closing:
                raise Busy("the server is shutting down")
            if len(self.queue) >= self.max_queue:
                raise Busy(f"{len(self.queue)} requests are waiting already; try again soon")
            self.queue.append(job)
            self.lock.notify()

    def close(self, timeout: float | None = None) -> None:
        """Take no new request; let those in flight and queued finish; stop decoding (and
        wait up to `timeout` for the thread of `start()`)."""
        with self.lock:
            self.closing = True
            self.lock.notify()
        if self.thread is not None:
            self.thread.join(timeout)

    @property
    def active(self) -> int:
        return self.cache.active

    @property
    def waiting(self) -> int:
        return len(self.queue)

    # ------------------------------------------------------------- the decoding thread

    @property
    def _has_work(self) -> bool:
        return bool(self.queue) or self.cache.active > 0

    def _turn(self) -> None:
        """Admit what waits into free rows, then take one batched step."""
        self._admit()
        if self.cache.active:
            try:
                self._step()
            except Exception as exc:  # a bug, or a device out of memory
                self._fail_all(f"{type(exc).__name__}: {exc}")

    def _admit(self) -> None:
        """Prefill waiting requests into free rows, first come first served."""
        while True:
            with self.lock:
                if not self.queue:
                    return
                job = self.queue[0]
                if not job.cancelled.is_set() and self.cache.active + job.n > len(self.rows):
                    return  # it waits for rows
                self.queue.popleft()
            if job.cancelled.is_set():
                continue
            try:
                self._start(job)
            except Exception as exc:  # a bug or an exhausted device: that request fails
                job.send(Failed(f"{type(exc).__name__}: {exc}"))

    def _start(self, job: Job) -> None:
        ids = job.prompt[-self.block :]
        logits, prefilled = self._prefill(ids, job)
        vocab = self.model.config.vocab_size
        for index in range(job.n):
            generator = torch.Generator(device=logits.device)
            seed = job.seed if job.seed is not None else int.from_bytes(os.urandom(8), "little")
            generator.manual_seed((seed + index) % 2**63)
            seen = None
            if job.decoding.repetition_penalty != 1.0:
                seen = seen_tokens(torch.tensor([job.prompt], device=logits.device), vocab)
            stream = TextStream(self.encoding, job.decoding.stop)
            sequence = _Sequence(job, index, list(ids), stream, generator, seen)
            row = self.cache.active
            self.cache.place(row, prefilled)
            self.cache.active += 1
            self.rows[row] = sequence
            self._emit(row, logits)

    def _prefill(self, ids: Sequence[int], job: Job | None) -> tuple[torch.Tensor, KVCache]:
        """Logits (1, V) after `ids` and the one-row cache holding them; with a job that
        scores its prompt, the prompt's log-probabilities are sent first."""
        cache = self.plan.new_cache(self.model, 1, len(ids))
        x = torch.tensor([list(ids)], device=self.cache.k.device)
        if job is not None and job.prompt_logprobs:
            hidden = self.model.hidden_states(x, cache)  # (1, T, C): every position scored
            job.send(self._prompt_scores(ids, hidden[0], job.logprobs or 0))
            return self.model.lm_head(hidden[:, -1]), cache
        return self.model.lm_head(self.model.hidden_states(x, cache, last=1)[:, -1]), cache

    def _prompt_scores(self, ids: Sequence[int], hidden: torch.Tensor, k: int) -> Prompt:
        logprobs: list[float | None] = [None]
        top: list[tuple[tuple[int, float], ...]] = [()]
        for start in range(0, len(ids) - 1, 256):  # the head over 256 positions at a time
            chunk = F.log_softmax(self.model.lm_head(hidden[start : start + 256]).float(), -1)
            for i, row in enumerate(chunk[: len(ids) - 1 - start]):
                logprobs.append(float(row[ids[start + i + 1]]))
                top.append(_top(row, k))
        return Prompt(tuple(ids), tuple(logprobs), tuple(top))

    def _step(self) -> None:
        """One batched step: every active row's last token in, every row's next token out."""
        n = self.cache.active
        rows = [self.rows[r] for r in range(n)]
        for row, sequence in enumerate(rows):  # a full context slides first, as generate does
            if sequence is not None and len(sequence.ids) > self.block:
                self._slide(row, sequence)
        tokens = torch.tensor(
            [s.ids[-1] if s is not None else self.eot for s in rows], device=self.cache.k.device
        )
        logits = next_logits(self.model, tokens[:, None], self.cache, self.fused)
        self.steps += 1
        # greedy rows without a penalty take the argmax, found for all rows in one call
        # (what `choose` finds for each; one call instead of one per row), in float32 as
        # `choose` takes it: torch's argmax of bf16 logits is 5x slower (16 rows of GPT-2's
        # vocabulary: 1.2 against 0.24 ms on a 2-core AVX-512 EPYC, a fifth of the step)
        plain = [s is not None and _plain_greedy(s.job.decoding) for s in rows]
        top = logits.float().argmax(dim=-1).tolist() if any(plain) else []
        for row in range(n - 1, -1, -1):  # backwards: freeing a row moves the last one
            self._emit(row, logits[row : row + 1], top[row] if plain[row] else None)

    def _slide(self, row: int, sequence: _Sequence) -> None:
        """The row's context is full: drop its oldest tokens (decoding.slide, or a quarter
        of the context) and prefill what is left again, all but the last token."""
        drop = slide_size(self.model, sequence.job.decoding.slide)
        cut = max(drop, len(sequence.ids) - self.block)
        sequence.ids = sequence.ids[cut:]
        _, prefilled = self._prefill(sequence.ids[:-1], None)
        self.cache.place(row, prefilled)

    def _emit(self, row: int, logits: torch.Tensor, chosen: int | None = None) -> None:
        """Draw row `row`'s next token from `logits` (1, V) (or take `chosen`, already
        drawn) and send it; free the row when its continuation ends or its request was
        cancelled."""
        sequence = self.rows[row]
        assert sequence is not None
        job, d = sequence.job, sequence.job.decoding
        if job.cancelled.is_set():
            self._free(row)
            return
        token = chosen if chosen is not None else int(
            choose(logits, d.temperature, d.top_k, d.top_p, d.repetition_penalty,
                   sequence.seen, sequence.generator)[0]
        )  # fmt: skip
        if token == self.eot:
            job.send(Finish(sequence.index, "stop", sequence.generated, sequence.stream.finish()))
            self._free(row)
            return
        sequence.generated += 1
        sequence.ids.append(token)
        if sequence.seen is not None:
            sequence.seen[0, token] = True
        logprob: float | None = None
        top: tuple[tuple[int, float], ...] = ()
        if job.logprobs is not None:
            scores = F.log_softmax(logits[0].float(), -1)
            logprob, top = float(scores[token]), _top(scores, job.logprobs)
        text = sequence.stream.push(token)
        job.send(Token(sequence.index, text, token, logprob, top))
        if sequence.stream.stopped:
            job.send(Finish(sequence.index, "stop", sequence.generated))
            self._free(row)
        elif sequence.generated >= d.max_new_tokens:
            job.send(Finish(sequence.index, "length", sequence.generated, sequence.stream.finish()))
            self._free(row)

    def _fail_all(self, message: str) -> None:
        """A step failed: every request in it is told so and its rows are freed (the engine
        goes on with the next requests)."""
        told: set[int] = set()
        for row in range(self.cache.active):
            sequence = self.rows[row]
            if sequence is not None and id(sequence.job) not in told:
                told.add(id(sequence.job))
                sequence.job.send(Failed(message))
            self.rows[row] = None
        self.cache.active = 0

    def _free(self, row: int) -> None:
        """Hand row `row` back: the last active row moves into it."""
        last = self.cache.active - 1
        if row != last:
            self.cache.copy_row(last, row)
            self.rows[row] = self.rows[last]
        self.rows[last] = None
        self.cache.active -= 1


def decode(engines: Sequence[Engine]) -> None:
    """Decode the engines' requests on this thread, one step of each engine with work in
    turn, until every engine is closed and has answered what it took. The engines must share
    one `wake` condition."""
    if len({id(engine.lock) for engine in engines}) > 1:
        raise ValueError("engines decoded together must share one wake condition")
    wake = engines[0].lock
    with torch.inference_mode():
        while True:
            with wake:
                while not any(e._has_work for e in engines) and not all(e.closing for e in engines):
                    wake.wait()
                if not any(e._has_work for e in engines):
                    return  # all closing, nothing left
            for engine in engines:
                if engine._has_work:
                    engine._turn()


def _plain_greedy(d: Decoding) -> bool:
    """Whether `choose` takes the plain argmax of the logits for these settings."""
    return d.temperature == 0 and d.repetition_penalty == 1.0


def _top(scores: torch.Tensor, k: int) -> tuple[tuple[int, float], ...]:
    """The k most likely tokens and their log-probabilities."""
    if k <= 0:
        return ()
    values, ids = torch.topk(scores, min(k, scores.numel()))
    return tuple((int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist(), strict=True))
