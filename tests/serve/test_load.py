"""A bounded load test of a real `gptpipe serve` on 127.0.0.1 (two small model folders,
float32 so that a row decoded inside a batch equals the same request decoded alone).

64 concurrent clients run for LOAD_SECONDS: 20 s by default, to keep the suite fast; the
environment variable GPTPIPE_LOAD_SECONDS raises it (issue 32's example is 60). Each client
sends, at random, valid requests (completions and chat, streamed or not, greedy and seeded
samples: each answer must equal the answer the same request got alone, its usage too),
invalid ones (bad JSON, wrong types, out-of-range values, an unknown model: each must get its
4xx JSON error naming the field) and abandoned ones (a stream closed after a few chunks).
The clients stop by themselves at the deadline. Afterwards the server still answers, /health
shows no active rows and no waiting requests, and its peak RSS (VmHWM) stayed under twice
what it was after the warm-up. The counts are printed (`pytest -s` shows them).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from helpers.server import Server, model_folders, serving

from benchmarks.bench_serve import memory_of, sse_chunks
from gptpipe.tokenizer.folder import gpt2_encoding

LOAD_SECONDS = float(os.environ.get("GPTPIPE_LOAD_SECONDS", "20"))
CLIENTS = 64
PROMPTS = ["The cat", "Once upon a time there was", "def f(x):", "Hello"]
COMPLETIONS, CHAT = "v1/completions", "v1/chat/completions"

# (route, body without `stream`): each is sent alone first, then under load, streamed or not
VALID: list[tuple[str, dict[str, Any]]] = [
    *[(COMPLETIONS, {"model": "base", "prompt": p, "max_tokens": m, "temperature": 0})
      for p in PROMPTS for m in (4, 12)],
    *[(COMPLETIONS, {"model": "base", "prompt": p, "max_tokens": 8, "temperature": 1.0,
                     "top_k": 50, "seed": 7, "n": 2}) for p in PROMPTS[:2]],
    *[(CHAT, {"model": "instruct", "messages": [{"role": "user", "content": p}],
              "max_tokens": 8, "temperature": 0}) for p in PROMPTS[:2]],
]  # fmt: skip
# (kind, route, body, status, param)
INVALID: list[tuple[str, str, dict[str, Any] | bytes, int, str | None]] = [
    ("bad json", COMPLETIONS, b'{"model": "base", "prompt": ', 400, None),
    ("bad json", CHAT, b"\xff\xfe", 400, None),
    ("wrong type", COMPLETIONS, {"model": "base", "prompt": "a", "max_tokens": "ten"}, 400,
     "max_tokens"),
    ("wrong type", CHAT, {"model": "instruct", "messages": "hi"}, 400, "messages"),
    ("wrong type", COMPLETIONS, {"model": "base", "prompt": "a", "stream": "yes"}, 400, "stream"),
    ("out of range", COMPLETIONS, {"model": "base", "prompt": "a", "temperature": -1}, 400,
     "temperature"),
    ("out of range", COMPLETIONS, {"model": "base", "prompt": "a", "n": 100}, 400, "n"),
    ("out of range", COMPLETIONS, {"model": "base", "prompt": "a", "top_p": 1.5}, 400, "top_p"),
    ("out of range", COMPLETIONS,
     {"model": "base", "prompt": "a", "max_tokens": 0, "stream": True}, 400, "max_tokens"),
    ("out of range", COMPLETIONS, {"model": "base", "prompt": [99999999]}, 400, "prompt"),
    ("unknown model", CHAT, {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
     404, "model"),
]  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """What an answer says, streamed or not: each choice's text and finish reason, usage."""

    texts: tuple[str, ...]
    finishes: tuple[str | None, ...]
    usage: tuple[int, int, int]


def _usage(usage: dict[str, int]) -> tuple[int, int, int]:
    return usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]


async def ask(http: httpx.AsyncClient, url: str, route: str, body: dict[str, Any]) -> Outcome:
    """Send a valid request (streamed when its body says so) and read its whole answer."""
    chat = route == CHAT
    if not body.get("stream"):
        reply = await http.post(url + route, json=body)
        assert reply.status_code == 200, reply.text
        choices = sorted(reply.json()["choices"], key=lambda c: c["index"])
        return Outcome(
            tuple(c["message"]["content"] if chat else c["text"] for c in choices),
            tuple(c["finish_reason"] for c in choices),
            _usage(reply.json()["usage"]),
        )
    texts: dict[int, str] = {}
    finishes: dict[int, str | None] = {}
    usage = (0, 0, 0)
    body = body | {"stream_options": {"include_usage": True}}
    async with http.stream("POST", url + route, json=body) as reply:
        assert reply.status_code == 200, (await reply.aread()).decode()
        async for chunk in sse_chunks(reply):
            assert "error" not in chunk, chunk  # the engine failed mid-stream
            if chunk.get("usage"):
                usage = _usage(chunk["usage"])
            for c in chunk["choices"]:
                piece = c["delta"].get("content", "") if chat else c["text"]
                texts[c["index"]] = texts.get(c["index"], "") + piece
                finishes[c["index"]] = c["finish_reason"] or finishes.get(c["index"])
    order = sorted(texts)
    return Outcome(tuple(texts[i] for i in order), tuple(finishes[i] for i in order), usage)


@dataclass
class Tally:
    """What the clients did (requests by kind), and what went wrong (with the request)."""

    sent: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


async def one_client(
    seed: int, url: str, deadline: float, alone: dict[str, Outcome], tally: Tally
) -> None:
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    async with httpx.AsyncClient(timeout=120, limits=limits, trust_env=False) as http:
        while time.monotonic() < deadline:
            roll = rng.random()
            route, body = rng.choice(VALID)
            body = body | {"stream": rng.random() < 0.5}
            try:
                if roll < 0.6:
                    got = await ask(http, url, route, body)
                    expected = alone[_key(route, body)]
                    if got != expected:
                        raise AssertionError(f"{got} != alone {expected}")
                    tally.sent[f"completed ({'streamed' if body['stream'] else 'whole'})"] += 1
                elif roll < 0.85:
                    kind, route, bad, status, param = rng.choice(INVALID)
                    body = {"bad": repr(bad)}
                    await refused(http, url, route, bad, status, param)
                    tally.sent[f"refused: {kind}"] += 1
                else:
                    body = {"abandoned": rng.choice(PROMPTS)}
                    await abandon(http, url, body["abandoned"], rng.randint(1, 4))
                    tally.sent["abandoned"] += 1
            except (AssertionError, httpx.HTTPError, KeyError, ValueError) as exc:
                tally.problems.append(f"{route} {body}: {type(exc).__name__}: {exc}")


async def refused(
    http: httpx.AsyncClient,
    url: str,
    route: str,
    body: dict[str, Any] | bytes,
    status: int,
    param: str | None,
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await http.post(url + route, content=content,
                            headers={"content-type": "application/json"})  # fmt: skip
    assert reply.status_code == status, f"{body!r}: {reply.status_code} {reply.text[:200]}"
    error = reply.json()["error"]
    assert error["param"] == param and error["message"], f"{body!r}: {error}"


async def abandon(http: httpx.AsyncClient, url: str, prompt: str, chunks: int) -> None:
    """A long stream the client leaves after `chunks` chunks."""
    body = {"model": "base", "prompt": prompt, "max_tokens": 300, "stream": True}
    async with http.stream("POST", url + COMPLETIONS, json=body) as reply:
        assert reply.status_code == 200
        seen = 0
        async for _ in sse_chunks(reply):
            seen += 1
            if seen == chunks:
                break


def _key(route: str, body: dict[str, Any]) -> str:
    """A valid request, streamed or not."""
    return json.dumps([route, {k: v for k, v in body.items() if k != "stream"}], sort_keys=True)


async def load(url: str, alone: dict[str, Outcome]) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + LOAD_SECONDS
    clients = [one_client(seed, url, deadline, alone, tally) for seed in range(CLIENTS)]
    await asyncio.wait_for(asyncio.gather(*clients), LOAD_SECONDS + 300)
    return tally


async def answers_alone(url: str) -> dict[str, Outcome]:
    """Every valid request's answer when it is the only one in the server."""
    found = {}
    async with httpx.AsyncClient(timeout=120, trust_env=False) as http:
        for route, body in VALID:
            found[_key(route, body)] = await ask(http, url, route, body)
    return found


def _health(server: Server) -> list[dict[str, Any]]:
    return httpx.get(server.url + "health", timeout=30, trust_env=False).json()["models"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return model_folders(tmp_path_factory.mktemp("load"))


def test_64_clients_of_every_kind_leave_a_server_that_still_answers(
    folders: dict[str, Path],
) -> None:
    args = ("--model", folders["base"], "--model", folders["instruct"], "--dtype", "float32")
    with serving(*args, "--batch", "16") as server:
        alone = asyncio.run(answers_alone(server.url))
        encoding = gpt2_encoding()
        for (route, body), outcome in zip(VALID, alone.values(), strict=True):
            prompt, completion, total = outcome.usage
            assert total == prompt + completion and len(outcome.texts) == body.get("n", 1)
            if route == COMPLETIONS:
                assert prompt == len(encoding.encode_ordinary(body["prompt"]))
            if all(f == "length" for f in outcome.finishes):
                assert completion == body["max_tokens"] * body.get("n", 1)
        warm = memory_of(server.process.pid)["peak_mb"]
        started = time.monotonic()
        tally = asyncio.run(load(server.url, alone))
        seconds = time.monotonic() - started
        deadline = time.monotonic() + 30  # abandoned streams free their rows at a next step
        while any(m["active"] or m["waiting"] for m in _health(server)):
            assert time.monotonic() < deadline, _health(server)
            time.sleep(0.05)
        peak = memory_of(server.process.pid)["peak_mb"]
        after = asyncio.run(answers_alone(server.url))
    print(
        f"\nload: {CLIENTS} clients, {seconds:.1f} s (LOAD_SECONDS {LOAD_SECONDS:g}): "
        f"{sum(tally.sent.values())} requests: "
        + ", ".join(f"{kind} {n}" for kind, n in sorted(tally.sent.items()))
        + f"; {len(tally.problems)} problems; peak RSS {warm:.0f} MB after the warm-up, "
        f"{peak:.0f} MB after the load"
    )
    assert not tally.problems, "\n".join(tally.problems[:5])
    assert after == alone  # the server still answers, the same
    assert peak < 2 * warm
    kinds = {kind for kind, _, _, _, _ in INVALID}
    assert {f"refused: {k}" for k in kinds} | {"abandoned"} <= set(tally.sent)
    assert tally.sent["completed (streamed)"] and tally.sent["completed (whole)"]
