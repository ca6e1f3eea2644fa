"""A scripted Ollama-compatible server on 127.0.0.1 (real HTTP), for the judge's tests."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Ollama:
    """Answers /api/chat and /api/generate with scripted replies, in order; records requests.
    `stream`: send the reply as Ollama streams it (JSON Lines, a piece per line)."""

    def __init__(self, replies: list[str], stream: bool = False) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[str, dict]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append((self.path, body))
                if self.path not in ("/api/chat", "/api/generate"):
                    self.send_response(404)
                    self.end_headers()
                    return
                text = owner.replies.pop(0)
                pieces = [text[: len(text) // 2], text[len(text) // 2 :]] if stream else [text]

                def message(piece: str, done: bool) -> dict:
                    if self.path == "/api/chat":
                        return {"message": {"role": "assistant", "content": piece}, "done": done}
                    return {"response": piece, "done": done}

                lines = [json.dumps(message(p, i == len(pieces) - 1)) for i, p in enumerate(pieces)]
                data = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
