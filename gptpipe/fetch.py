"""Getting a source file: a pinned file (mirror folder first, then its URLs), a URL or a path.

Downloads stream through urllib to a temporary file beside the destination, hashing as they
go; a download either lands whole at its destination or leaves nothing behind. Connection
errors, 5xx responses and truncated bodies are retried with exponential backoff; a 404, an
HTML page where a data file was expected, or a wrong sha256 is bad input at once.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gptpipe import __version__
from gptpipe.errors import BadInput
from gptpipe.fsutil import atomic_file
from gptpipe.progress import progress

SourceKind = Literal["url", "file", "path"]

CHUNK = 1 << 16
USER_AGENT = f"gptpipe/{__version__} (+urllib)"
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Fetched:
    """A local file holding a source's bytes, and where they came from."""

    path: Path
    location: str
    sha256: str
    bytes: int
    archive: dict[str, object] | None = None  # sha256/bytes/location of a zip it came out of


class Truncated(Exception):
    """The server closed the connection before sending all the bytes it announced."""


def file_digest(path: Path) -> tuple[str, int]:
    """The sha256 (hex) and size in bytes of a file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def source_kind(text: str, key: str) -> SourceKind:
    """Whether a source is an http(s) URL, a file:// URL or a local path; other schemes are bad."""
    scheme, sep, _ = text.partition("://")
    if not sep:
        return "path"
    scheme = scheme.lower()
    if scheme in ("http", "https"):
        return "url"
    if scheme == "file":
        return "file"
    raise BadInput(
        f"params key '{key}': unsupported URL scheme {scheme!r} in {text!r}; "
        "allowed: http://, https://, file:// or a local path"
    )


def file_url_path(url: str) -> Path:
    """The local path a file:// URL names."""
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise BadInput(f"{url}: file:// URLs must name a local file (no host)")
    return Path(urllib.request.url2pathname(parsed.path))


def local_file(path: Path, location: str) -> Fetched:
    """A local file as a fetched source (read in place, never copied)."""
    if not path.is_file():
        raise BadInput(f"{path}: file not found")
    sha, size = file_digest(path)
    return Fetched(path=path, location=location, sha256=sha, bytes=size)


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:64].lower()
    return start.startswith((b"<!doctype html", b"<html"))


def _stream(url: str, part: Path, timeout: float) -> None:
    """One attempt: stream `url` into `part`, resuming it with a Range request when it holds
    bytes from an earlier attempt and the server answers 206; raises on any failure."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        content_type = response.headers.get("Content-Type", "").lower()
        if content_type.startswith("text/html"):
            raise BadInput(
                f"{url}: served an HTML page (Content-Type {content_type}), not a data file"
            )
        content_range = response.headers.get("Content-Range", "")
        if not (have and response.status == 206 and content_range.startswith(f"bytes {have}-")):
            have = 0  # no resume offered: start again from the first byte
        length_header = response.headers.get("Content-Length")
        expected = have + int(length_header) if length_header and length_header.isdigit() else None
        size = have
        name = Path(urllib.parse.urlparse(url).path).name or url
        with progress() as bar, open(part, "ab" if have else "wb") as fh:
            task = bar.add_task(f"download {name}", total=expected, completed=have)
            while True:
                try:
                    chunk = response.read(CHUNK)
                except http.client.IncompleteRead as exc:
                    fh.write(exc.partial)
                    raise Truncated(
                        f"connection closed after {size + len(exc.partial)} bytes"
                    ) from None
                if not chunk:
                    break
                if size == 0 and _looks_like_html(chunk):
                    raise BadInput(f"{url}: served an HTML page, not a data file")
                fh.write(chunk)
                size += len(chunk)
                bar.update(task, completed=size)
        if expected is not None and size < expected:
            raise Truncated(f"got {size} of {expected} bytes")


def download(
    url: str, dest: Path, *, timeout: float, retries: int, backoff: float = 1.0
) -> Fetched:
    """Download `url` to `dest` atomically, with `retries` attempts on transient failures.

    Waits `backoff * 2**k` seconds before the k-th retry. Bytes received before a dropped
    connection stay in a partial file beside `dest` between attempts, and the next attempt
    asks for the rest (HTTP Range); a server that answers with the whole file starts it
    over. A 4xx response (other than 408 and 429) or an HTML page fails at once; only bad
    input ever reaches the caller, and the partial file never outlives the call.
    """
    last = "no attempt made"
    part = dest.with_name(f".{dest.name}.part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        for attempt in range(1, retries + 1):
            if attempt > 1 and backoff > 0:
                time.sleep(backoff * 2 ** (attempt - 2))
            try:
                _stream(url, part, timeout)
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code == 416:  # our Range is past the end: start over
                    part.unlink(missing_ok=True)
                    last = "HTTP 416 Range Not Satisfiable"
                    continue
                if exc.code not in RETRY_STATUS:
                    raise BadInput(f"{url}: HTTP {exc.code} {exc.reason}") from None
                last = f"HTTP {exc.code} {exc.reason}"
                continue
            except Truncated as exc:
                last = f"truncated body ({exc})"
                continue
            except urllib.error.URLError as exc:
                last = f"connection failed ({exc.reason})"
                continue
            except TimeoutError:
                last = f"no data for {timeout:g} s"
                continue
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                last = f"connection failed ({exc.__class__.__name__}: {exc})"
                continue
            sha, size = file_digest(part)
            os.replace(part, dest)
            return Fetched(path=dest, location=url, sha256=sha, bytes=size)
        raise BadInput(f"{url}: {last} (gave up after {retries} attempts)")
    finally:
        part.unlink(missing_ok=True)


def extract_member(archive: Fetched, member: str, dest: Path) -> Fetched:
    """Extract one member of a zip archive to `dest` (atomically) as a fetched file."""
    try:
        with zipfile.ZipFile(archive.path) as zf:
            names = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
            if member not in names:
                raise BadInput(f"{archive.location}: zip archive has no member {member!r}")
            with atomic_file(dest) as tmp, zf.open(names[member]) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
    except zipfile.BadZipFile:
        raise BadInput(f"{archive.location}: not a valid zip archive") from None
    sha, size = file_digest(dest)
    return Fetched(
        path=dest,
        location=f"{archive.location}#{member}",
        sha256=sha,
        bytes=size,
        archive={"location": archive.location, "sha256": archive.sha256, "bytes": archive.bytes},
    )


def _unpack(fetched: Fetched, member: str | None, work_dir: Path) -> Fetched:
    """The member of a zip archive when the pinned file comes zipped, else the file itself."""
    if member is None or not zipfile.is_zipfile(fetched.path):
        return fetched
    return extract_member(fetched, member, work_dir / member)


def _check(fetched: Fetched, sha256: str) -> Fetched:
    if fetched.sha256 != sha256:
        raise BadInput(
            f"{fetched.location}: sha256 mismatch (expected {sha256}, got {fetched.sha256})"
        )
    return fetched


def fetch_pinned(
    file_name: str,
    urls: Sequence[str],
    sha256: str,
    work_dir: Path,
    *,
    mirror: Path | None,
    timeout: float,
    retries: int,
    backoff: float = 1.0,
    archive_name: str | None = None,
) -> Fetched:
    """A file known by name and sha256: from the mirror folder if it has it, else from `urls`.

    `archive_name` is the name of a zip the URLs serve (its member `file_name` is what the
    sha256 pins); the mirror may hold either the bare file or the zip. Whatever is found is
    verified: a mismatch is bad input naming the file or URL, never a silent fallback.
    """
    member = file_name if archive_name else None
    if mirror is not None:
        for name in (file_name, archive_name):
            if name and (mirror / name).is_file():
                found = local_file(mirror / name, str((mirror / name).resolve()))
                return _check(_unpack(found, member, work_dir), sha256)
    if not urls:
        raise BadInput(f"{file_name}: not in the mirror folder and no URL to download it from")
    errors = []
    for url in urls:
        dest = work_dir / (archive_name or file_name)
        try:
            fetched = download(url, dest, timeout=timeout, retries=retries, backoff=backoff)
        except BadInput as exc:
            errors.append(str(exc))
            continue
        return _check(_unpack(fetched, member, work_dir), sha256)
    raise BadInput("; ".join(errors))


def fetch_source(
    source: str,
    key: str,
    work_dir: Path,
    *,
    timeout: float,
    retries: int,
    backoff: float = 1.0,
) -> Fetched:
    """A user-given source (http(s) URL, file:// URL or local path), its sha256 recorded."""
    kind = source_kind(source, key)
    if kind == "path":
        path = Path(source).expanduser()
        if not path.is_file():
            raise BadInput(f"params key '{key}': {source}: file not found")
        return local_file(path, str(path.resolve()))
    if kind == "file":
        path = file_url_path(source)
        if not path.is_file():
            raise BadInput(f"params key '{key}': {source}: file not found")
        return local_file(path, source)
    name = Path(urllib.parse.urlparse(source).path).name or "download"
    return download(source, work_dir / name, timeout=timeout, retries=retries, backoff=backoff)
