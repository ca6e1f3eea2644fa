"""The bodies of OpenAI's completion requests, and how they become the pipeline's decoding.

Types are checked strictly by pydantic (a number where a string goes is refused, not
converted); the values by the one home of the decoding settings, `gptpipe.decoding.check`,
under the request's own field names (`max_tokens`, `temperature`, `top_p`, `n`, `stop`,
`seed`, and the extras `top_k` and `repetition_penalty`), so the server refuses what
`gptpipe generate` refuses. Settings a request leaves out take the pipeline's defaults:
`generate`'s for completions, `chat`'s for chat completions. A refusal is a `RequestError`:
the field (OpenAI's `param`) and the message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gptpipe.decoding import CHAT, GENERATE, Decoding, check

# Limits a request must keep (the README documents them; `gptpipe serve` may lower or raise
# the first two).
MAX_N = 8  # continuations per request (each takes a row of the batch)
MAX_LOGPROBS = 20  # alternatives reported per token
MAX_STOPS = 4  # stop strings per request (OpenAI's limit)
# The request fields that name each decoding setting.
FIELD_OF = {
    "max_new_tokens": "max_tokens",
    "num_samples": "n",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "repetition_penalty": "repetition_penalty",
    "stop": "stop",
    "seed": "seed",
}


class RequestError(Exception):
    """A request the server refuses: the body field it names (OpenAI's `param`), why, and
    the HTTP status (400 unless said otherwise). The message begins with the field's name,
    so that a client showing only the message still says which field it was."""

    def __init__(self, param: str | None, message: str, status: int = 400) -> None:
        if param and not message.startswith(f"{param}:"):
            message = f"{param}: {message}"
        super().__init__(message)
        self.param, self.message, self.status = param, message, status


class _Body(BaseModel):
    """What every completion request holds; unknown fields are accepted and ignored (clients
    send fields of newer API versions), but not those whose meaning the server cannot give."""

    model_config = ConfigDict(strict=True, extra="allow")

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    top_k: int | None = None  # an extra of ours (and of many servers)
    repetition_penalty: float | None = None  # an extra of ours
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    user: str | None = None

    def include_usage(self) -> bool:
        """Whether the stream ends with a usage chunk (`stream_options.include_usage`)."""
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionBody(_Body):
    """POST /v1/completions."""

    prompt: str | list[str] | list[int] | list[list[int]] = "<|endoftext|>"
    logprobs: int | None = None
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text (its text parts, joined)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part.text or "" for part in self.content if part.type == "text")


class ChatBody(_Body):
    """POST /v1/chat/completions."""

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None


def decoding_of(body: _Body, chat: bool, max_tokens: int) -> tuple[Decoding, int, int | None]:
    """The request's decoding settings, continuations and seed; `max_tokens` is the
    server's limit on one continuation's tokens. Refuses values no entry point takes."""
    if body.presence_penalty != 0 or body.frequency_penalty != 0:
        param = "presence_penalty" if body.presence_penalty != 0 else "frequency_penalty"
        raise RequestError(param, f"{param} is not supported; use repetition_penalty (> 1)")
    defaults: Mapping[str, Any] = CHAT if chat else GENERATE
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > MAX_STOPS:
        raise RequestError("stop", f"at most {MAX_STOPS} stop strings, not {len(stop)}")
    limit = body.max_tokens
    if isinstance(body, ChatBody) and body.max_completion_tokens is not None:
        limit = body.max_completion_tokens
    values = {
        "max_new_tokens": limit,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "repetition_penalty": body.repetition_penalty,
        "stop": tuple(stop),
        "num_samples": body.n,
        "seed": body.seed,
    }
    check(values, FIELD_OF.__getitem__, RequestError)
    if limit is not None and limit > max_tokens:
        raise RequestError("max_tokens", f"must be at most {max_tokens} on this server")
    if body.n > MAX_N:
        raise RequestError("n", f"must be at most {MAX_N}, not {body.n}")
    given = {k: v for k, v in values.items() if v is not None and k not in ("num_samples", "seed")}
    settings = {**{k: defaults[k] for k in FIELD_OF if k in defaults}, **given}
    settings["max_new_tokens"] = min(settings["max_new_tokens"], max_tokens)
    return Decoding.of(settings), body.n, body.seed


def defaults(chat: bool, max_tokens: int) -> dict[str, Any]:
    """The settings a request that leaves them out gets, under the request's field names
    (a client, such as the chat page, can show them)."""
    chosen = CHAT if chat else GENERATE
    values = {FIELD_OF[k]: chosen[k] for k in FIELD_OF if k not in ("num_samples", "seed")}
    values["max_tokens"] = min(values["max_tokens"], max_tokens)
    values["stop"] = list(values["stop"])
    return values


def logprobs_of(body: CompletionBody | ChatBody) -> int | None:
    """How many alternatives to report per token (None: no logprobs)."""
    if isinstance(body, CompletionBody):
        k, param = body.logprobs, "logprobs"
    else:
        k = (body.top_logprobs or 0) if body.logprobs else None
        param = "top_logprobs"
        if body.top_logprobs is not None and not body.logprobs:
            raise RequestError("top_logprobs", "needs logprobs: true")
    if k is not None and not 0 <= k <= MAX_LOGPROBS:
        raise RequestError(param, f"must be in 0..{MAX_LOGPROBS}, not {k}")
    return k


def finite(value: float | None) -> float | None:
    """A log-probability as JSON takes it (-inf: a token the model ruled out, as null)."""
    return value if value is not None and math.isfinite(value) else None
