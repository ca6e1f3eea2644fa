"""`gptpipe serve`: model folders over HTTP, in OpenAI's API shapes, with a chat page.

Each `--model` folder is served under its folder name (or `--name`), by an engine that
decodes all its requests together (continuous batching, `gptpipe.serve.engine`). The main
thread, which loaded the models, decodes (see the engine's docstring for why); uvicorn
answers HTTP on a thread of its own. The server binds to 127.0.0.1 unless told otherwise,
prints the URL it listens on, and on Ctrl-C or SIGTERM stops taking connections, lets the
requests in flight finish, and exits 0.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from gptpipe.cli.generate import Device, DType
from gptpipe.config import require_fits
from gptpipe.decoding import SettingError
from gptpipe.errors import BadInput
from gptpipe.generate.decode import decoding_bytes, for_decoding, weight_bytes
from gptpipe.model.folder import is_instruct, load_language_model, read_info
from gptpipe.runtime import set_threads
from gptpipe.serve.api import Limits, Served, make_app
from gptpipe.serve.engine import Engine, decode

MAX_ROWS = 256  # continuations decoded together per model, at most


class _Server(uvicorn.Server):
    """uvicorn's server on a thread that is not the main one: the main thread takes Ctrl-C
    and SIGTERM (`_signals`) and hands them to `handle_exit`, so that the server ends with
    status 0 once the requests in flight are answered (uvicorn's own handling raises the
    signal again after its shutdown, which would end the process as killed by it); a second
    Ctrl-C forces the exit, as uvicorn's does."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def _signals(server: _Server) -> Iterator[None]:
    """Ctrl-C and SIGTERM stop `server` while this lasts (on the main thread)."""
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, server.handle_exit) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def load_served(
    folders: list[Path],
    names: list[str],
    device: str,
    dtype: str,
    rows: int,
    wake: threading.Condition | None = None,
) -> dict[str, Served]:
    """Each folder's model prepared for decoding, with its engine (not yet decoding; the
    engines share `wake`), by id. Each engine allocates `rows` rows of its model's whole
    context at start; rows that cannot fit, with the models loaded before, are refused
    (naming --batch) before that. A request's `n` continuations take rows of that cache."""
    if names and len(names) != len(folders):
        raise BadInput(f"--name: give one per --model ({len(folders)}), not {len(names)}")
    ids = names or [folder.resolve().name for folder in folders]
    for i, name in enumerate(ids):
        if not name or name in ids[:i]:
            raise BadInput(f"--name: model ids must be distinct and non-empty: {ids}")
    served: dict[str, Served] = {}
    need = 0  # the memory of the models and engines so far
    for folder, name in zip(folders, ids, strict=True):
        model, encoding = load_language_model(folder, device)
        model = for_decoding(model, dtype)
        block = model.config.block_size
        need += weight_bytes(model) + decoding_bytes(model, rows, block, penalty=True)
        what = f"{rows} rows of {block} positions for each of {len(served) + 1} model(s)"
        require_fits("--batch", need, what, error=SettingError)
        engine = Engine(model, encoding, rows=rows, wake=wake)
        instruct = is_instruct(folder, read_info(folder))
        served[name] = Served(name, engine, encoding, instruct, model.config.block_size)
    return served


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, or one line naming the option that cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BadInput(f"--host {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise BadInput(f"--port {port}: cannot listen on {host}:{port} ({reason})") from None
    sock.listen(128)
    return sock


def command(
    model: Annotated[
        list[Path],
        typer.Option("--model", help="Model folder to serve (repeatable): a language model."),
    ],
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--name",
            help="Its id in the API (repeatable, one per --model; default: the folder's name).",
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free one; the URL says which).")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="GPTPIPE_API_KEY",
            help="Require 'Authorization: Bearer KEY' on every route but / and /health "
            "(default: $GPTPIPE_API_KEY; none: open).",
        ),
    ] = None,
    batch: Annotated[
        int,
        typer.Option(
            help=f"Continuations decoded together per model (1..{MAX_ROWS}); more "
            "requests wait in a queue."
        ),
    ] = 16,
    max_tokens: Annotated[
        int, typer.Option(help="Tokens one continuation may ask for (max_tokens), at most.")
    ] = 2048,
    device: Device = "auto",
    dtype: DType = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0: its default).")] = 0,
) -> None:
    """Serve model folders over HTTP: an OpenAI-compatible API (/v1/completions,
    /v1/chat/completions, /v1/models; streaming as server-sent events) and a chat page at /.

    Requests to one model are decoded together, one batched step per token. Ctrl-C or
    SIGTERM lets the requests in flight finish, then exits.
    """
    if not 1 <= batch <= MAX_ROWS:
        raise BadInput(f"--batch: must be in 1..{MAX_ROWS}, not {batch}")
    if max_tokens < 1:
        raise BadInput(f"--max-tokens: must be >= 1, not {max_tokens}")
    if not 0 <= port <= 65535:
        raise BadInput(f"--port: must be in 0..65535, not {port}")
    if api_key is not None and not api_key.strip():
        raise BadInput("--api-key: must not be empty")
    set_threads(threads)
    sock = _bind(host, port)
    served = load_served(list(model), list(name or []), device, dtype, batch, threading.Condition())
    app = make_app(served, api_key, Limits(max_tokens=max_tokens))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = _Server(config)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(
        f"gptpipe serve: http://{shown}:{bound_port}/ ({', '.join(served)}); the API at "
        f"/v1 ({'key required' if api_key else 'open'}); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    failed: list[BaseException] = []

    def answer() -> None:  # the HTTP side; when it ends, decoding ends after what is in flight
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # handed to the main thread
            failed.append(exc)
        finally:
            for entry in served.values():
                entry.engine.close()

    http = threading.Thread(target=answer, name="gptpipe-http")
    with _signals(server):
        http.start()
        try:
            decode([entry.engine for entry in served.values()])
        finally:
            server.should_exit = True  # already so after a clean end; else stop answering
            http.join()
    if failed:
        raise failed[0]
    print("gptpipe serve: stopped", file=sys.stderr)
