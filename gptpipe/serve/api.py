"""The HTTP API: OpenAI's completion and chat completion shapes over the batching engines.

Routes: `GET /` (the chat page), `GET /health`, `GET /v1/models`, `POST /v1/completions`,
`POST /v1/chat/completions` (server-sent events with `stream: true`, ending in `[DONE]`).
Every answer carries `usage`. Bad requests are OpenAI-style JSON errors with a 4xx status
and `param` naming the field: an unknown model (404), malformed JSON, a wrong type, a value
the decoding settings refuse, `n` or `max_tokens` over the server's limits (400), a body
over the size limit (413), a missing or wrong API key (401), a full queue (503). An error
inside the server is a 500 with a JSON body and one logged line, never a traceback to the
client.

A prompt longer than the model's context keeps its last tokens (as `gptpipe generate` does)
and the answer says so in `warnings`; a continuation may run past the context, its window
sliding as in `gptpipe generate`. Only the model folders given at start are ever read.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import tiktoken
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from gptpipe.prompts import conversation_prompt
from gptpipe.serve.engine import Busy, Engine, Event, Failed, Finish, Job, Prompt, Token
from gptpipe.serve.schemas import (
    MAX_LOGPROBS,
    MAX_N,
    MAX_STOPS,
    ChatBody,
    CompletionBody,
    RequestError,
    decoding_of,
    defaults,
    finite,
    logprobs_of,
)

log = logging.getLogger("gptpipe.serve")


@dataclass
class Served:
    """One model the server answers for: its id, its engine and tokenizer, whether it is
    instruction-tuned (chat prompts take its template), and its context."""

    name: str
    engine: Engine
    encoding: tiktoken.Encoding
    instruct: bool
    context: int
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass(frozen=True)
class Limits:
    """What one request may ask: tokens per continuation, and the body's bytes."""

    max_tokens: int = 2048
    max_body: int = 1 << 20


class _KeyGuard:
    """The API key on every route but the page and /health, compared in constant time. Plain
    ASGI: a streamed answer's chunks pass straight through (FastAPI's `@app.middleware`
    would copy each one through a memory stream)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in ("/", "/health"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = error_body("missing or wrong API key (Authorization: Bearer KEY)", None)
                body["error"]["code"] = "invalid_api_key"
                await JSONResponse(body, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _Mailbox:
    """Events from the decoding thread to the event loop, delivered in batches: one wake-up
    of the loop per batch (a step's tokens for every client), not one per event."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.pending: list[tuple[asyncio.Queue[tuple[int, Event]], tuple[int, Event]]] = []

    def post(self, queue: asyncio.Queue[tuple[int, Event]], item: tuple[int, Event]) -> None:
        """Called on the decoding thread; RuntimeError when the loop has closed."""
        with self.lock:
            self.pending.append((queue, item))
            if len(self.pending) > 1:
                return  # a delivery is already on its way
        self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self.lock:
            batch, self.pending = self.pending, []
        for queue, item in batch:
            queue.put_nowait(item)


def _mailbox(request: Request) -> _Mailbox:
    """The app's mailbox to its running event loop (made on the first request)."""
    loop = asyncio.get_running_loop()
    mailbox: _Mailbox | None = getattr(request.app.state, "mailbox", None)
    if mailbox is None or mailbox.loop is not loop:
        mailbox = request.app.state.mailbox = _Mailbox(loop)
    return mailbox


def error_body(message: str, param: str | None, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def make_app(
    models: dict[str, Served], api_key: str | None = None, limits: Limits = Limits()
) -> FastAPI:
    """The FastAPI application serving `models` (id -> Served)."""
    app = FastAPI(title="gptpipe", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestError)
    async def refused(_: Request, exc: RequestError) -> JSONResponse:
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        return JSONResponse(error_body(exc.message, exc.param, kind), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(exc.detail), None), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        body = error_body("internal error (logged on the server)", None, "server_error")
        return JSONResponse(body, status_code=500)

    if api_key is not None:
        app.add_middleware(_KeyGuard, api_key=api_key)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("gptpipe.serve").joinpath("page.html").read_text())

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "models": [
                {"id": m.name, "active": m.engine.active, "waiting": m.engine.waiting}
                for m in models.values()
            ],
        }

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(m, limits) for m in models.values()]}

    @app.get("/v1/models/{name}")
    async def one_model(name: str) -> dict[str, Any]:
        return _model_card(_served(models, name), limits)

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Response | dict[str, Any]:
        body = await _parse(request, CompletionBody, limits)
        assert isinstance(body, CompletionBody)
        served = _served(models, body.model)
        prompts = _prompts(body, served)
        return await _answer(request, served, body, prompts, limits, chat=False)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response | dict[str, Any]:
        body = await _parse(request, ChatBody, limits)
        assert isinstance(body, ChatBody)
        served = _served(models, body.model)
        if body.tools:
            raise RequestError("tools", "tool calls are not supported")
        messages = [
            (m.role if m.role != "developer" else "system", m.text()) for m in body.messages
        ]
        if not any(role == "user" for role, _ in messages):
            raise RequestError("messages", "needs a user message to answer")
        text = conversation_prompt(messages, served.instruct)
        prompts = [_encode(served, text)]
        return await _answer(request, served, body, prompts, limits, chat=True)

    return app


def _model_card(served: Served, limits: Limits) -> dict[str, Any]:
    """OpenAI's model object, and what a client may want to know before asking: the
    context, whether chat prompts take an instruction template, the limits of a request and
    the settings it gets when it leaves them out."""
    return {
        "id": served.name,
        "object": "model",
        "created": served.created,
        "owned_by": "gptpipe",
        "context_length": served.context,
        "instruction_tuned": served.instruct,
        "limits": {
            "max_tokens": limits.max_tokens,
            "n": min(MAX_N, len(served.engine.rows)),
            "logprobs": MAX_LOGPROBS,
            "stop": MAX_STOPS,
            "body_bytes": limits.max_body,
        },
        "defaults": {
            "completions": defaults(False, limits.max_tokens),
            "chat": defaults(True, limits.max_tokens),
        },
    }


def _served(models: dict[str, Served], name: str) -> Served:
    if name not in models:
        known = ", ".join(models) or "none"
        raise RequestError("model", f"no model {name!r} here (models: {known})", 404)
    return models[name]


async def _parse(request: Request, kind: type[BaseModel], limits: Limits) -> BaseModel:
    """The body as `kind`: refused over the size limit, when not JSON, when a field has the
    wrong type (naming it)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body:
        raise RequestError(None, f"request body over {limits.max_body} bytes", 413)
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limits.max_body:
            raise RequestError(None, f"request body over {limits.max_body} bytes", 413)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(None, f"the body is not valid JSON ({exc})") from None
    except RecursionError:
        raise RequestError(None, "the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise RequestError(None, "the body must be a JSON object")
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ""
        for part in first["loc"]:
            if isinstance(part, int):
                param += f"[{part}]"
            elif part not in _TYPE_NAMES:
                param += f".{part}" if param else str(part)
        raise RequestError(param or None, f"{param or 'body'}: {first['msg']}") from None


# pydantic names a union's alternatives in an error's location; the field is what counts
_TYPE_NAMES = {"str", "int", "float", "bool", "list[str]", "list[int]", "list[list[int]]"}


def _encode(served: Served, text: str) -> list[int]:
    ids = served.encoding.encode_ordinary(text)
    return ids or [served.engine.eot]


def _prompts(body: CompletionBody, served: Served) -> list[list[int]]:
    """The request's prompts as ids: one text, a list of texts, a list of ids, or a list of
    lists of ids (ids must be the model's)."""
    prompt = body.prompt
    vocab = served.engine.model.config.vocab_size
    if isinstance(prompt, str):
        return [_encode(served, prompt)]
    if not prompt:
        raise RequestError("prompt", "must not be empty")
    if all(isinstance(p, str) for p in prompt):
        return [_encode(served, str(p)) for p in prompt]
    lists = [p if isinstance(p, list) else None for p in prompt]
    rows: list[list[int]] = [list(prompt)] if all(isinstance(p, int) for p in prompt) else []  # type: ignore[arg-type]
    if not rows and all(r is not None for r in lists):
        rows = [list(r) for r in lists if r is not None]
    for row in rows:
        if not row or any(not 0 <= t < vocab for t in row):
            raise RequestError(
                "prompt", f"token ids must be in 0..{vocab - 1}, and a prompt non-empty"
            )
    return rows


@dataclass
class _Choice:
    """What one continuation has produced so far."""

    text: str = ""
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float | None] = field(default_factory=list)
    top: list[tuple[tuple[int, float], ...]] = field(default_factory=list)
    finish: str | None = None
    generated: int = 0


async def _answer(
    request: Request,
    served: Served,
    body: CompletionBody | ChatBody,
    prompts: list[list[int]],
    limits: Limits,
    chat: bool,
) -> Response | dict[str, Any]:
    decoding, n, seed = decoding_of(body, chat, limits.max_tokens)
    rows = len(served.engine.rows)
    if n > rows:
        raise RequestError("n", f"must be at most {rows} on this server (gptpipe serve --batch)")
    k = logprobs_of(body)
    echo = isinstance(body, CompletionBody) and body.echo
    warnings = []
    context = served.context
    for i, ids in enumerate(prompts):
        if len(ids) > context:
            warnings.append(
                f"prompt {i}: {len(ids)} tokens exceed the context of {context}; the last "
                f"{context} were kept"
            )
            prompts[i] = ids[-context:]
    queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
    mailbox = _mailbox(request)

    def sender(p: int) -> Callable[[Event], None]:
        def send(event: Event) -> None:  # called on the decoding thread
            try:
                mailbox.post(queue, (p, event))
            except RuntimeError:  # the event loop has closed (a forced exit): nobody listens
                jobs[p].cancel()

        return send

    jobs = [
        Job(
            ids,
            decoding,
            sender(p),
            n=n,
            seed=seed,
            logprobs=k,
            prompt_logprobs=echo and k is not None,
        )
        for p, ids in enumerate(prompts)
    ]
    try:
        for job in jobs:
            served.engine.submit(job)
    except Busy as exc:
        for job in jobs:
            job.cancel()
        raise RequestError(None, str(exc), 503) from None
    reply = _Reply(served, body, prompts, n, chat, warnings)
    if body.stream:
        return EventSourceResponse(reply.events(queue, jobs), ping=15)
    try:
        await reply.collect(request, queue, jobs)
    finally:
        for job in jobs:
            job.cancel()  # a client gone (or a failure): free the rows of what is left
    return reply.whole(echo)


class _Reply:
    """The answer to one request, from the engine's events: whole, or streamed chunk by
    chunk (each choice's index is prompt * n + its continuation)."""

    def __init__(
        self,
        served: Served,
        body: CompletionBody | ChatBody,
        prompts: list[list[int]],
        n: int,
        chat: bool,
        warnings: list[str],
    ) -> None:
        self.served, self.body, self.prompts, self.n, self.chat = served, body, prompts, n, chat
        self.warnings = warnings
        self.choices = [_Choice() for _ in range(len(prompts) * n)]
        self.prompt_scores: dict[int, Prompt] = {}
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.open = len(self.choices)

    def take(self, p: int, event: Event) -> int | None:
        """Record an event; the index of the choice it concerns (None: the prompt's scores)."""
        if isinstance(event, Failed):
            raise RequestError(None, f"the model failed to answer: {event.message}", 500)
        if isinstance(event, Prompt):
            self.prompt_scores[p] = event
            return None
        index = p * self.n + event.index
        choice = self.choices[index]
        if isinstance(event, Token):
            choice.text += event.text
            choice.tokens.append(event.token)
            choice.logprobs.append(event.logprob)
            choice.top.append(event.top)
            choice.generated += 1
        else:
            choice.text += event.text
            choice.finish = event.reason
            self.open -= 1
        return index

    async def collect(
        self, request: Request, queue: asyncio.Queue[tuple[int, Event]], jobs: list[Job]
    ) -> None:
        while self.open:
            try:
                p, event = await asyncio.wait_for(queue.get(), timeout=0.5)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                continue
            self.take(p, event)

    def usage(self) -> dict[str, int]:
        prompt = sum(len(ids) for ids in self.prompts)
        completion = sum(c.generated for c in self.choices)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def whole(self, echo: bool) -> dict[str, Any]:
        choices = []
        for index, choice in enumerate(self.choices):
            if self.chat:
                item: dict[str, Any] = {
                    "index": index,
                    "message": {"role": "assistant", "content": choice.text},
                    "logprobs": self._chat_logprobs(choice) if self._logprobs() else None,
                }
            else:
                p = index // self.n
                text = choice.text
                if echo:
                    text = self.served.encoding.decode(self.prompts[p]) + text
                item = {"index": index, "text": text, "logprobs": None}
                if self._logprobs():
                    item["logprobs"] = self._completion_logprobs(
                        choice, self.prompt_scores.get(p) if echo else None
                    )
            item["finish_reason"] = choice.finish or "length"
            choices.append(item)
        answer: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.served.name,
            "choices": choices,
            "usage": self.usage(),
        }
        if self.warnings:
            answer["warnings"] = self.warnings
        return answer

    async def events(
        self, queue: asyncio.Queue[tuple[int, Event]], jobs: list[Job]
    ) -> AsyncIterator[dict[str, str]]:
        """The server-sent events of a streamed answer; leaving early (the client went away)
        cancels the jobs, whose rows are freed at the next step."""
        try:
            if self.chat:
                for index in range(len(self.choices)):
                    yield self._chunk(index, {"role": "assistant", "content": ""})
            elif isinstance(self.body, CompletionBody) and self.body.echo:
                for index in range(len(self.choices)):
                    text = self.served.encoding.decode(self.prompts[index // self.n])
                    yield self._chunk(index, text)
            while self.open:
                p, event = await queue.get()
                try:
                    taken = self.take(p, event)
                except RequestError as exc:  # the engine failed: say so in the stream, then end
                    log.error("%s: %s", self.id, exc.message)
                    yield {"data": json.dumps(error_body(exc.message, None, "server_error"))}
                    return
                if taken is None:
                    continue
                index = taken
                if isinstance(event, Token) and (event.text or self._logprobs()):
                    delta = {"content": event.text} if self.chat else event.text
                    yield self._chunk(index, delta, token=event)
                elif isinstance(event, Finish):
                    if event.text:
                        yield self._chunk(
                            index, {"content": event.text} if self.chat else event.text
                        )
                    yield self._chunk(index, {} if self.chat else "", finish=event.reason)
            if self.body.include_usage():
                yield {"data": json.dumps(self._base([]) | {"usage": self.usage()})}
            yield {"data": "[DONE]"}
        finally:
            for job in jobs:
                job.cancel()

    def _base(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.served.name,
            "choices": choices,
        }

    def _chunk(
        self,
        index: int,
        delta: dict[str, str] | str,
        finish: str | None = None,
        token: Token | None = None,
    ) -> dict[str, str]:
        item: dict[str, Any] = {"index": index, "finish_reason": finish, "logprobs": None}
        if self.chat:
            item["delta"] = delta
            if token is not None and self._logprobs():
                item["logprobs"] = {
                    "content": [self._chat_entry(token.token, token.logprob, token.top)]
                }
        else:
            item["text"] = delta
            if token is not None and self._logprobs():
                item["logprobs"] = self._completion_entries(
                    [token.token], [token.logprob], [token.top]
                )
        return {"data": json.dumps(self._base([item]))}

    # --------------------------------------------------------------- logprobs

    def _logprobs(self) -> bool:
        return logprobs_of(self.body) is not None

    def _token_text(self, token: int) -> str:
        return self.served.encoding.decode_single_token_bytes(token).decode("utf-8", "replace")

    def _completion_entries(
        self,
        tokens: list[int],
        logprobs: list[float | None],
        top: list[tuple[tuple[int, float], ...]],
        offset: int = 0,
    ) -> dict[str, Any]:
        texts = [self._token_text(t) for t in tokens]
        offsets, at = [], offset
        for text in texts:
            offsets.append(at)
            at += len(text)
        return {
            "tokens": texts,
            "token_logprobs": [finite(v) for v in logprobs],
            "top_logprobs": [
                {self._token_text(t): finite(v) for t, v in alternatives} or None
                for alternatives in top
            ],
            "text_offset": offsets,
        }

    def _completion_logprobs(self, choice: _Choice, prompt: Prompt | None) -> dict[str, Any]:
        tokens, logprobs, top = list(choice.tokens), list(choice.logprobs), list(choice.top)
        if prompt is not None:
            tokens = list(prompt.tokens) + tokens
            logprobs = list(prompt.logprobs) + logprobs
            top = list(prompt.top) + top
        return self._completion_entries(tokens, logprobs, top)

    def _chat_entry(
        self, token: int, logprob: float | None, top: tuple[tuple[int, float], ...]
    ) -> dict[str, Any]:
        def one(t: int, v: float | None) -> dict[str, Any]:
            raw = self.served.encoding.decode_single_token_bytes(t)
            return {
                "token": raw.decode("utf-8", "replace"),
                "logprob": finite(v),
                "bytes": list(raw),
            }

        return one(token, logprob) | {"top_logprobs": [one(t, v) for t, v in top]}

    def _chat_logprobs(self, choice: _Choice) -> dict[str, Any]:
        return {
            "content": [
                self._chat_entry(t, v, top)
                for t, v, top in zip(choice.tokens, choice.logprobs, choice.top, strict=True)
            ]
        }
