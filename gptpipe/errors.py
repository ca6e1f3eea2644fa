"""The one exception type for bad input: the CLI turns it into exit status 2.

`one_line` is the boundary's last net: it turns the failures a user can cause and fix (a file
system that refuses, absurdly nested YAML, a value a library rejects) into one line naming the
path, and answers None for anything else, which stays a real bug with a traceback.
"""

from __future__ import annotations

import errno


class BadInput(Exception):
    """Bad params, data or files. The message is one line naming the key or file."""


class ConfigError(BadInput):
    """A params key with a wrong type or an impossible value."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"params key '{key}': {message}")
        self.key = key


def os_message(exc: OSError, path: object = None) -> str:
    """'PATH: reason' for a failed file-system call (the path the error names, else `path`)."""
    where = exc.filename if exc.filename is not None else path
    reason = exc.strerror or str(exc) or exc.__class__.__name__
    if exc.errno == errno.ENOSPC:
        reason = "no space left on device (free some disk space and rerun)"
    elif exc.errno == errno.EROFS:
        reason = "read-only file system"
    elif exc.errno == errno.EFBIG:
        reason = "file too large for this file system or process limit"
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    return f"{where}: {reason}" if where is not None else reason


def one_line(exc: BaseException) -> str | None:
    """The one-line message for a foreseeable failure, or None when `exc` is a bug."""
    if isinstance(exc, BadInput):
        return _single(str(exc))
    if isinstance(exc, OSError) and exc.errno is not None:
        return _single(os_message(exc))
    if isinstance(exc, RecursionError):
        return "input nested too deeply to read (absurdly nested YAML or JSON?)"
    if isinstance(exc, MemoryError):
        return "out of memory (the configured sizes do not fit in this machine's memory)"
    return None


def _single(text: str) -> str:
    """Collapse a message onto one line (library messages sometimes carry newlines)."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) or "bad input"
