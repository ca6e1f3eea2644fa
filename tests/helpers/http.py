"""One HTTP server for tests: real sockets on 127.0.0.1, scripted replies or a folder.

`serve({path: route})` answers each path with a scripted `Reply` (a status, headers, a body
that may stop short of its announced length, come slowly or in pieces, or carry no length at
all, a redirect), or with a callable that is handed the `Request` (its method, headers, body
and which hit on that path it is) and returns the `Reply`: a reply that changes from one
request to the next, a Range request answered (`byte_range`), a POSTed body read.
`serve_folder(root)` serves the files of a folder. Both count the requests each path received
(`hits`) and keep them in arrival order (`log`, `requests(path)`).
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    `announce` sets Content-Length (default: the body's length); `unannounced` sends none (the
    body ends when the connection closes); `stop_after` closes the connection after that many
    body bytes (a download that stops half-way). `delay` waits that long before answering at
    all (a stalled server); `pieces` writes the body in that many parts with `pause` seconds
    before each part after the first (a slow body, or one that stalls half-way).
    """

    body: bytes = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    headers: Mapping[str, str] = field(default_factory=dict)
    announce: int | None = None
    unannounced: bool = False
    stop_after: int | None = None
    delay: float = 0.0
    pieces: int = 1
    pause: float = 0.0


@dataclass(frozen=True)
class Request:
    """One request as the server received it; `hit` is 1 for the first request on its path."""

    method: str
    path: str
    headers: Message
    body: bytes
    hit: int


def redirect(location: str, status: int = 302) -> Reply:
    """A redirect to `location` (absolute, or a path on this server)."""
    return Reply(status=status, headers={"Location": location}, content_type="text/plain")


def html(text: str = "<html><body>Sign in to continue</body></html>") -> Reply:
    """An HTML page, as a login wall or error page serves one."""
    return Reply(body=text.encode(), content_type="text/html; charset=utf-8")


_RANGE = re.compile(r"bytes=(\d+)-")


def byte_range(body: bytes, request: Request, content_type: str = "text/plain") -> Reply:
    """`body` as a server that honours Range requests answers `request`: 206 with the bytes
    from the asked-for start (`Range: bytes=N-`), the whole body (200) when no range was asked
    for, 416 for a range it does not understand or that starts past the end."""
    asked = request.headers.get("Range")
    if asked is None:
        return Reply(body, content_type=content_type)
    match = _RANGE.fullmatch(asked.strip())
    if match is None or int(match[1]) >= len(body):
        return Reply(status=416, headers={"Content-Range": f"bytes */{len(body)}"})
    start = int(match[1])
    return Reply(
        body[start:],
        status=206,
        content_type=content_type,
        headers={"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"},
    )


Route = Reply | Callable[[Request], Reply]


class Server:
    """A running server: `url(path)`, `hits` per path, every request in `log`."""

    def __init__(self, httpd: ThreadingHTTPServer) -> None:
        self.httpd = httpd
        self.hits: Counter[str] = Counter()
        self.log: list[Request] = []
        self._lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}"

    def url(self, path: str) -> str:
        return self.base + path

    def requests(self, path: str) -> list[Request]:
        """The requests `path` received, in order."""
        with self._lock:
            return [r for r in self.log if r.path == path]

    def record(self, handler: BaseHTTPRequestHandler, body: bytes = b"") -> Request:
        path = handler.path.split("?", 1)[0]
        with self._lock:
            self.hits[path] += 1
            request = Request(handler.command, path, handler.headers, body, self.hits[path])
            self.log.append(request)
        return request


def _send(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
    if reply.delay:
        time.sleep(reply.delay)
    handler.send_response(reply.status)
    handler.send_header("Content-Type", reply.content_type)
    if not reply.unannounced:
        length = len(reply.body) if reply.announce is None else reply.announce
        handler.send_header("Content-Length", str(length))
    for key, value in reply.headers.items():
        handler.send_header(key, value)
    handler.end_headers()
    body = reply.body if reply.stop_after is None else reply.body[: reply.stop_after]
    step = max(1, -(-len(body) // max(1, reply.pieces)))
    try:
        for start in range(0, len(body), step):
            if start and reply.pause:
                time.sleep(reply.pause)
            handler.wfile.write(body[start : start + step])
            handler.wfile.flush()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up on us: that is what some tests provoke
    if reply.stop_after is not None or reply.unannounced:
        handler.close_connection = True


def _scripted(server: Server, routes: Mapping[str, Route]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def answer(self, body: bytes = b"") -> None:
            request = server.record(self, body)
            route = routes.get(request.path)
            if route is None:
                reply = Reply(b"not found", status=404, content_type="text/plain")
            else:
                reply = route(request) if callable(route) else route
            _send(self, reply)

        def do_GET(self) -> None:
            self.answer()

        def do_POST(self) -> None:
            self.answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    return Handler


class _QuietFiles(SimpleHTTPRequestHandler):
    def __init__(self, *args: object, server: Server, **kwargs: object) -> None:
        self.counter = server
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.counter.record(self)
        super().do_GET()


@contextlib.contextmanager
def _running(
    handler: Callable[[Server], Callable[..., BaseHTTPRequestHandler]],
) -> Iterator[Server]:
    """A server on a fresh port whose handler is `handler(server)` for the block's duration."""
    holder: list[Server] = []

    def make(*args: object, **kwargs: object) -> BaseHTTPRequestHandler:
        return handler(holder[0])(*args, **kwargs)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make)
    httpd.daemon_threads = True
    holder.append(Server(httpd))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def serve(routes: Mapping[str, Route]) -> Iterator[Server]:
    """Serve scripted replies on 127.0.0.1 (a fresh port) for the duration of the block."""
    with _running(lambda server: _scripted(server, routes)) as server:
        yield server


@contextlib.contextmanager
def serve_folder(root: Path) -> Iterator[Server]:
    """Serve the files under `root` on 127.0.0.1 (a fresh port)."""
    with _running(
        lambda server: functools.partial(_QuietFiles, server=server, directory=str(root))
    ) as server:
        yield server
