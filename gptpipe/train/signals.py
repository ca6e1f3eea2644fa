"""Ctrl-C and SIGTERM as a request to stop at the next step boundary, so that a checkpoint
holds a consistent state.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType


@contextlib.contextmanager
def stop_requests() -> Iterator[Callable[[], bool]]:
    """While active, SIGINT and SIGTERM ask the loop to stop at the next step boundary (so a
    checkpoint holds a consistent state); a second signal interrupts at once."""
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(requested)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
