"""One HTTP server for tests: real sockets on 127.0.0.1, scripted replies or a folder.

`serve({path: reply})` answers each path with a scripted `Reply` (a status, headers, a body
that may stop short of its announced length, a redirect); `serve_folder(root)` serves the
files of a folder. Both count the requests each path received.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `announce` sets Content-Length (default: the body's length);
    `stop_after` closes the connection after that many body bytes (a download that stops
    half-way)."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    headers: Mapping[str, str] = field(default_factory=dict)
    announce: int | None = None
    stop_after: int | None = None


def redirect(location: str, status: int = 302) -> Reply:
    """A redirect to `location` (absolute, or a path on this server)."""
    return Reply(status=status, headers={"Location": location}, content_type="text/plain")


def html(text: str = "<html><body>Sign in to continue</body></html>") -> Reply:
    """An HTML page, as a login wall or error page serves one."""
    return Reply(body=text.encode(), content_type="text/html; charset=utf-8")


Route = Reply | Callable[[BaseHTTPRequestHandler], Reply]


class Server:
    """A running server: `url(path)`, and `hits` per path."""

    def __init__(self, httpd: ThreadingHTTPServer) -> None:
        self.httpd = httpd
        self.hits: Counter[str] = Counter()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}"

    def url(self, path: str) -> str:
        return self.base + path


def _scripted(server: Server, routes: Mapping[str, Route]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            server.hits[path] += 1
            route = routes.get(path)
            if route is None:
                reply = Reply(b"not found", status=404, content_type="text/plain")
            else:
                reply = route(self) if callable(route) else route
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            length = len(reply.body) if reply.announce is None else reply.announce
            self.send_header("Content-Length", str(length))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            body = reply.body if reply.stop_after is None else reply.body[: reply.stop_after]
            self.wfile.write(body)
            if reply.stop_after is not None:
                self.wfile.flush()
                self.close_connection = True

    return Handler


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _running(handler: Callable[..., BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def serve(routes: Mapping[str, Route]) -> Iterator[Server]:
    """Serve scripted replies on 127.0.0.1 (a fresh port) for the duration of the block."""
    holder: list[Server] = []

    def handler(*args: object, **kwargs: object) -> BaseHTTPRequestHandler:
        return _scripted(holder[0], routes)(*args, **kwargs)  # type: ignore[arg-type]

    with _running(handler) as httpd:
        holder.append(Server(httpd))
        yield holder[0]


@contextlib.contextmanager
def serve_folder(root: Path) -> Iterator[Server]:
    """Serve the files under `root` on 127.0.0.1 (a fresh port)."""
    with _running(functools.partial(_QuietFiles, directory=str(root))) as httpd:
        yield Server(httpd)
