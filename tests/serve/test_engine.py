"""The engine on its own: a batch of rows that fill and finish at their own pace decodes
exactly what `generate_ids` decodes for each prompt alone, rows are reused, a cancelled
request frees its rows, and a failing request fails alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import torch

from gptpipe.decoding import Decoding
from gptpipe.generate.decode import for_decoding, generate_ids
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.serve.engine import Busy, Engine, Event, Failed, Finish, Job, Token
from gptpipe.tokenizer.folder import gpt2_encoding

ENCODING = gpt2_encoding()
EOT = ENCODING.eot_token
BLOCK = 48  # short: most continuations below run past it and slide
PROMPTS = [
    "The cat",
    "Once upon a time there was a king who had three daughters and",
    "def f(x):",
    "Hello",
    "A",
    "In the beginning the universe was created. This has made a lot of people very",
]


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=50257, block_size=BLOCK, n_layer=2, n_head=2, n_embd=64)
    # float32: a row decoded inside a batch and alone agree exactly, on any CPU
    return for_decoding(GPT(config), "float32", layout="plain")


class Sink:
    """Collects one request's events; `done` is set when all its continuations ended."""

    def __init__(self, n: int = 1) -> None:
        self.events: list[Event] = []
        self.left = n
        self.done = threading.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, Finish):
            self.left -= 1
        if self.left == 0 or isinstance(event, Failed):
            self.done.set()

    def tokens(self, index: int = 0) -> list[int]:
        return [e.token for e in self.events if isinstance(e, Token) and e.index == index]

    def finish(self, index: int = 0) -> Finish:
        return next(e for e in self.events if isinstance(e, Finish) and e.index == index)

    def wait(self) -> None:
        assert self.done.wait(60), "the engine did not finish the request"


@pytest.fixture(scope="module")
def model() -> GPT:
    return tiny_model()


@pytest.fixture
def engine(model: GPT) -> Iterator[Engine]:
    engine = Engine(model, ENCODING, rows=3).start()
    yield engine
    engine.close(timeout=30)


def test_greedy_rows_decode_what_each_prompt_decodes_alone(engine: Engine, model: GPT) -> None:
    # six prompts of different lengths over three rows: rows are freed and taken again
    # mid-flight, each with its own length, and every continuation slides past the context
    sinks = []
    for i, text in enumerate(PROMPTS):
        sink = Sink()
        engine.submit(
            Job(ENCODING.encode_ordinary(text), Decoding(max_new_tokens=60 + 7 * i), sink)
        )
        sinks.append(sink)
    for sink in sinks:
        sink.wait()
    for i, (text, sink) in enumerate(zip(PROMPTS, sinks, strict=True)):
        decoding = Decoding(max_new_tokens=60 + 7 * i)
        alone = generate_ids(model, [ENCODING.encode_ordinary(text)], decoding, stop_ids=[EOT])[0]
        assert sink.tokens() == alone, text
        finish = sink.finish()
        assert finish.tokens == len(alone)
        assert finish.reason == ("length" if len(alone) == decoding.max_new_tokens else "stop")
    assert engine.active == 0 and engine.waiting == 0
    assert engine.steps > 0


def test_sampled_continuations_follow_their_seeds(engine: Engine, model: GPT) -> None:
    prompt = ENCODING.encode_ordinary("The king said")
    decoding = Decoding(max_new_tokens=40, temperature=1.0, top_k=50, top_p=0.95)
    sink = Sink(n=3)
    engine.submit(Job(prompt, decoding, sink, n=3, seed=11))
    sink.wait()
    for index in range(3):  # continuation i draws from seed + i, as `gptpipe generate` would
        generator = torch.Generator().manual_seed(11 + index)
        alone = generate_ids(model, [prompt], decoding, generator, stop_ids=[EOT])[0]
        assert sink.tokens(index) == alone
    assert len({tuple(sink.tokens(i)) for i in range(3)}) > 1  # the three differ


def test_repetition_penalty_counts_the_prompt(engine: Engine, model: GPT) -> None:
    prompt = ENCODING.encode_ordinary("one two three one two three one two")
    decoding = Decoding(max_new_tokens=30, repetition_penalty=1.5)
    sink = Sink()
    engine.submit(Job(prompt, decoding, sink))
    sink.wait()
    assert sink.tokens() == generate_ids(model, [prompt], decoding, stop_ids=[EOT])[0]


def test_stop_strings_end_a_continuation_without_their_text(engine: Engine) -> None:
    prompt = ENCODING.encode_ordinary("Hello")
    first = Sink()
    engine.submit(Job(prompt, Decoding(max_new_tokens=20), first))
    first.wait()
    text = ENCODING.decode(first.tokens())
    stop = text[len(text) // 2 : len(text) // 2 + 2]  # two characters from its middle
    assert stop.strip()
    sink = Sink()
    engine.submit(Job(prompt, Decoding(max_new_tokens=20, stop=(stop,)), sink))
    sink.wait()
    released = "".join(e.text for e in sink.events if isinstance(e, Token | Finish))
    assert sink.finish().reason == "stop"
    assert released == text[: text.index(stop)]


def test_logprobs_are_the_models_own(engine: Engine, model: GPT) -> None:
    prompt = ENCODING.encode_ordinary("The cat sat")
    sink = Sink()
    engine.submit(Job(prompt, Decoding(max_new_tokens=5), sink, logprobs=3))
    sink.wait()
    ids = list(prompt)
    for event in [e for e in sink.events if isinstance(e, Token)]:
        with torch.inference_mode():
            scores = torch.log_softmax(model(torch.tensor([ids]))[0][0, -1].float(), -1)
        assert event.logprob == pytest.approx(float(scores.max()), abs=1e-4)  # greedy: the top
        assert [t for t, _ in event.top] == scores.topk(3).indices.tolist()
        ids.append(event.token)


def test_a_cancelled_request_frees_its_rows_for_the_next(engine: Engine) -> None:
    running = threading.Event()
    long = Sink(n=3)

    def send(event: Event) -> None:
        long(event)
        if all(long.tokens(i) for i in range(3)):
            running.set()

    job = Job(ENCODING.encode_ordinary("Tell me"), Decoding(max_new_tokens=100_000), send, n=3)
    engine.submit(job)
    try:
        assert running.wait(30)
        assert engine.active == 3  # it holds every row
        waiting = Sink()
        engine.submit(Job(ENCODING.encode_ordinary("Next"), Decoding(max_new_tokens=5), waiting))
        assert engine.waiting == 1
    finally:
        job.cancel()
    waiting.wait()  # it got a row once the cancelled request let go
    assert not any(isinstance(e, Finish) for e in long.events)  # cancelled: no finish sent
    assert len(long.tokens()) < 100_000


def test_a_failing_request_fails_alone(engine: Engine) -> None:
    bad = Sink()
    engine.submit(Job([50_300], Decoding(max_new_tokens=5), bad))  # an id past the vocabulary
    good = Sink()
    engine.submit(Job(ENCODING.encode_ordinary("Hi"), Decoding(max_new_tokens=5), good))
    bad.wait()
    good.wait()
    assert isinstance(bad.events[-1], Failed) and "IndexError" in bad.events[-1].message
    assert good.finish().tokens > 0


def test_a_full_queue_and_a_closing_engine_refuse_work(model: GPT) -> None:
    engine = Engine(model, ENCODING, rows=1, max_queue=1)  # not started: nothing is taken
    engine.submit(Job([1], Decoding(max_new_tokens=1), Sink()))
    with pytest.raises(Busy, match="1 requests are waiting"):
        engine.submit(Job([1], Decoding(max_new_tokens=1), Sink()))
    engine.close()
    with pytest.raises(Busy, match="shutting down"):
        engine.submit(Job([1], Decoding(max_new_tokens=1), Sink()))


def test_close_lets_requests_in_flight_finish(model: GPT) -> None:
    engine = Engine(model, ENCODING, rows=2).start()
    sinks = [Sink() for _ in range(4)]
    for sink in sinks:
        engine.submit(Job(ENCODING.encode_ordinary("Go"), Decoding(max_new_tokens=30), sink))
    engine.close(timeout=60)
    assert engine.thread is not None and not engine.thread.is_alive()
    assert all(sink.done.is_set() and sink.finish().tokens > 0 for sink in sinks)
