"""A scripted Ollama-compatible server on 127.0.0.1 (real HTTP), for the judge's tests."""

from __future__ import annotations

import contextlib
import json

from helpers.http import Reply, Request, serve


class Ollama:
    """Answers /api/chat and /api/generate with scripted replies, in order; records requests.
    `stream`: send the reply as Ollama streams it (JSON Lines, a piece per line)."""

    def __init__(self, replies: list[str], stream: bool = False) -> None:
        self.replies = list(replies)
        self.stream = stream
        self._stack = contextlib.ExitStack()
        routes = {"/api/chat": self._answer, "/api/generate": self._answer}
        self._server = self._stack.enter_context(serve(routes))
        self.url = self._server.base

    @property
    def requests(self) -> list[tuple[str, dict]]:
        """Every POST received (on any path), as (path, JSON body), in order."""
        return [(r.path, json.loads(r.body)) for r in self._server.log if r.method == "POST"]

    def _answer(self, request: Request) -> Reply:
        text = self.replies.pop(0)
        pieces = [text[: len(text) // 2], text[len(text) // 2 :]] if self.stream else [text]

        def message(piece: str, done: bool) -> dict:
            if request.path == "/api/chat":
                return {"message": {"role": "assistant", "content": piece}, "done": done}
            return {"response": piece, "done": done}

        lines = [json.dumps(message(p, i == len(pieces) - 1)) for i, p in enumerate(pieces)]
        return Reply(("\n".join(lines) + "\n").encode(), content_type="application/x-ndjson")

    def close(self) -> None:
        self._stack.close()
