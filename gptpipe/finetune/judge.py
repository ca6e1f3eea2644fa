"""An optional judge of instruction responses, as the book does it (Raschka, ch. 7.8): an
Ollama-compatible server scores each response 0 to 100 against the reference.

Speaks Ollama's `/api/chat` (messages in, `message.content` out) or `/api/generate` (prompt
in, `response` out), by the URL's path, with `"stream": false`; a streamed reply (JSON
Lines, as Ollama sends by default) is read too. Deterministic options as in the book:
temperature 0, seed 123.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from gptpipe.errors import ConfigError
from gptpipe.prompts import format_prompt

OPTIONS = {"seed": 123, "temperature": 0, "num_ctx": 2048}
_INTEGER = re.compile(r"^\s*(\d{1,3})\s*\.?\s*$")


def judge_prompt(instruction: str, input: str, reference: str, response: str) -> str:
    """The book's scoring prompt (its `format_input` is our Alpaca prompt without the
    response header)."""
    entry = format_prompt(instruction, input).removesuffix("### Response:\n").rstrip("\n")
    return (
        f"Given the input `{entry}` "
        f"and correct output `{reference}`, "
        f"score the model response `{response}`"
        f" on a scale from 0 to 100, where 100 is the best score. "
        f"Respond with the integer number only."
    )


def parse_score(reply: str) -> int | None:
    """The integer 0..100 a reply holds, alone (a trailing full stop allowed), else None."""
    match = _INTEGER.match(reply)
    if not match or int(match.group(1)) > 100:
        return None
    return int(match.group(1))


def _reply_text(body: str, chat: bool) -> str:
    """The text of a reply: one JSON object, or JSON Lines of streamed pieces."""
    pieces = []
    for line in body.splitlines():
        if not line.strip():
            continue
        value = json.loads(line)
        pieces.append(value["message"]["content"] if chat else value["response"])
    return "".join(pieces)


def query(url: str, model: str, prompt: str, timeout: float) -> str:
    """One request to the judge; connection errors and bad replies name instruct.judge_url."""
    chat = not url.rstrip("/").endswith("/api/generate")
    payload: dict[str, Any] = {"model": model, "stream": False, "options": OPTIONS}
    if chat:
        payload["messages"] = [{"role": "user", "content": prompt}]
    else:
        payload["prompt"] = prompt
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            body = reply.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        raise ConfigError("instruct.judge_url", f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError("instruct.judge_url", f"cannot reach {url} ({reason})") from None
    try:
        return _reply_text(body, chat)
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError(
            "instruct.judge_url", f"{url} did not answer like Ollama ({body[:80]!r})"
        ) from None


def judge(
    url: str, model: str, records: Sequence[dict[str, Any]], timeout: float
) -> dict[str, Any]:
    """Score each record's `response`; sets `judge_score` (int or None) on every record and
    returns {"judge_mean": mean of the parsed scores (None if none), "judge_unparsed": n}."""
    parsed: list[int] = []
    for record in records:
        prompt = judge_prompt(
            record["instruction"], record["input"], record["reference"], record["response"]
        )
        score = parse_score(query(url, model, prompt, timeout))
        record["judge_score"] = score
        if score is not None:
            parsed.append(score)
    mean = sum(parsed) / len(parsed) if parsed else None
    return {"judge_mean": mean, "judge_unparsed": len(records) - len(parsed)}
