"""Getting a source file: a pinned file (mirror folder first, then its URLs), a URL or a path;
out of an archive when a member is named.

Downloads stream through urllib to a temporary file beside the destination, hashing as they
go; a download either lands whole at its destination or leaves nothing behind. Connection
errors, stalls past the timeout, 5xx responses and truncated bodies are retried with
exponential backoff, resuming with HTTP Range; a 404, an HTML page where a data file was
expected, a body over the size limit or a wrong sha256 is bad input at once (the caller may
then move on to another mirror).

Archives (zip, tar with any compression, a lone gzip/bz2/xz/zstd stream) are recognised by their
bytes. Nothing is ever extracted by the names inside: every entry is checked first (absolute
paths, `..`, links and devices refuse the whole archive) and only the member wanted is read,
as a stream, into a scratch file of our own naming, stopped at the size limit (so a
decompression bomb fills neither the disk nor the time).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.client
import io
import lzma
import os
import re
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import zstandard

from gptpipe import __version__
from gptpipe.errors import BadInput
from gptpipe.fsutil import atomic_file
from gptpipe.progress import progress

SourceKind = Literal["url", "file", "path"]
ArchiveFormat = Literal["zip", "tar", "gzip", "bz2", "xz", "zstd"]

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
    archive: dict[str, object] | None = None  # location/sha256/bytes of its archive


@dataclass(frozen=True)
class FetchOptions:
    """How files are fetched: the stalled-connection `timeout` in seconds, `retries` attempts
    per URL, the largest accepted file (`max_bytes`; None: no limit) and the first retry's
    delay in seconds (`backoff`, doubling after each; tests shorten it)."""

    timeout: float
    retries: int
    max_bytes: int | None = None
    backoff: float = 1.0


class Truncated(Exception):
    """The server closed the connection before sending all the bytes it announced."""


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s) URLs, and say a redirect loop in one line."""

    max_redirections = 10

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def,unused-ignore]
        _check_redirect(req.full_url, newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)

    def http_error_302(self, req, fp, code, msg, headers):  # type: ignore[no-untyped-def,unused-ignore]
        location = headers.get("Location") or headers.get("URI")
        if location:  # refuse other schemes here: urllib's own refusal is a multi-line error
            _check_redirect(req.full_url, location)
        try:
            return super().http_error_302(req, fp, code, msg, headers)
        except urllib.error.HTTPError as exc:
            if "infinite loop" in str(exc.msg) and exc.code in (301, 302, 303, 307, 308):
                exc.close()
                raise BadInput(
                    f"{req.full_url}: redirect loop (more than {self.max_redirections} "
                    "redirects or back to a URL already visited)"
                ) from None
            raise

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _check_redirect(url: str, location: str) -> None:
    """A redirect to anything but an http(s) URL is bad input naming both."""
    try:
        scheme = urllib.parse.urlsplit(urllib.parse.urljoin(url, location)).scheme.lower()
    except ValueError as exc:
        raise BadInput(f"{url}: redirected to a malformed URL {location!r} ({exc})") from None
    if scheme not in ("http", "https"):
        raise BadInput(
            f"{url}: redirected to {location!r}, a {scheme or 'schemeless'} URL; "
            "only http(s) redirects are followed"
        )


_OPENER = urllib.request.build_opener(_Redirects)


def sha256_and_size(path: Path) -> tuple[str, int]:
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
        try:
            host = urllib.parse.urlsplit(text).hostname
        except ValueError as exc:
            raise BadInput(f"params key '{key}': malformed URL {text!r} ({exc})") from None
        if not host:
            raise BadInput(f"params key '{key}': malformed URL {text!r} (no host)")
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
    sha, size = sha256_and_size(path)
    return Fetched(path=path, location=location, sha256=sha, bytes=size)


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:64].lower()
    return start.startswith((b"<!doctype html", b"<html"))


def _too_large(where: str, max_bytes: int, size: int | None = None, verb: str = "is") -> BadInput:
    """Bad input for a file over the size limit (`size` when known, else only that it is)."""
    limit = f"the size limit of {max_bytes} bytes (data.max_bytes)"
    if size is None:
        return BadInput(f"{where}: {verb} more than {limit}")
    return BadInput(f"{where}: {size} bytes, over {limit}")


def _stream(url: str, part: Path, timeout: float, max_bytes: int | None) -> None:
    """One attempt: stream `url` into `part`, resuming it with a Range request when it holds
    bytes from an earlier attempt and the server answers 206; raises on any failure."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        request = urllib.request.Request(url, headers=headers)
    except ValueError as exc:  # no host, unknown type
        raise BadInput(f"{url}: malformed URL ({exc})") from None
    try:
        response = _OPENER.open(request, timeout=timeout)
    except (ValueError, http.client.InvalidURL) as exc:
        raise BadInput(f"{url}: malformed URL ({exc})") from None
    with response:
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
        if max_bytes is not None and expected is not None and expected > max_bytes:
            raise _too_large(url, max_bytes, expected)
        size = have
        name = Path(urllib.parse.urlparse(url).path).name or url
        with progress() as bar, open(part, "ab" if have else "wb") as fh:
            task = bar.add_task(f"download {name}", total=expected, completed=have)
            while True:
                try:
                    # read1: whatever has arrived (up to CHUNK), so bytes received before a
                    # stall are on disk, not lost in a buffer, when the timeout strikes.
                    chunk = response.read1(CHUNK)
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
                if max_bytes is not None and size > max_bytes:
                    raise _too_large(url, max_bytes)
                bar.update(task, completed=size)
        if expected is not None and size < expected:
            raise Truncated(f"got {size} of {expected} bytes")


def download(url: str, dest: Path, options: FetchOptions) -> Fetched:
    """Download `url` to `dest` atomically, with `options.retries` attempts on transient
    failures (`timeout`, `backoff`, `max_bytes` below are `options`' fields).

    Waits `backoff * 2**k` seconds before the k-th retry. Bytes received before a dropped
    connection stay in a partial file beside `dest` between attempts, and the next attempt
    asks for the rest (HTTP Range); a server that answers with the whole file starts it
    over. A 4xx response (other than 408 and 429), an HTML page or a body over `max_bytes`
    (announced or received) fails at once; only bad input ever reaches the caller, and the
    partial file never outlives the call.
    """
    timeout, retries, backoff = options.timeout, options.retries, options.backoff
    max_bytes = options.max_bytes
    last = "no attempt made"
    part = dest.with_name(f".{dest.name}.part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        for attempt in range(1, retries + 1):
            if attempt > 1 and backoff > 0:
                time.sleep(backoff * 2 ** (attempt - 2))
            try:
                _stream(url, part, timeout, max_bytes)
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
            sha, size = sha256_and_size(part)
            os.replace(part, dest)
            return Fetched(path=dest, location=url, sha256=sha, bytes=size)
        raise BadInput(f"{url}: {last} (gave up after {retries} attempts)")
    finally:
        part.unlink(missing_ok=True)


# --------------------------------------------------------------------------- archives

# Names whose part after the last '#' is an archive member (local paths; URLs use the fragment).
ARCHIVE_SUFFIXES = (
    ".zip",
    ".tar",
    ".tar.gz",
    ".tgz",
    ".tar.bz2",
    ".tbz2",
    ".tar.xz",
    ".txz",
    ".gz",
    ".bz2",
    ".xz",
    ".zst",
)


class ZstdReader(io.RawIOBase):
    """A `.zst` file's bytes, decompressed as they are read.

    python-zstandard's own readers stop quietly at the end of the first frame (or, reading
    across frames, in the middle of a cut-off one), so a truncated file would pass as a
    shorter corpus. This reads every frame (zstd files may hold several, as `pzstd` writes
    them) and raises `zstandard.ZstdError` when the input ends inside one. Input goes to the
    decompressor `PIECE` bytes at a time: zstd's largest ratio is about 32,768 (a 128 KiB
    block from a few bytes), so one call never yields more than about 32 MiB, and the
    caller's size limit (`data.max_bytes`) stops a decompression bomb before it fills memory.
    """

    PIECE = 1024

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._fh = open(path, "rb")  # noqa: SIM115 (closed by close())
        self._dctx = zstandard.ZstdDecompressor()
        self._obj: Any = None  # the frame being decompressed, None between frames
        self._input = b""
        self._at = 0  # bytes of _input already given to the decompressor
        self._out = b""
        self._out_at = 0

    def readable(self) -> bool:
        return True

    def _refill(self) -> bool:
        """Decompress until output is pending; False at the clean end of the last frame."""
        while self._out_at >= len(self._out):
            if self._at >= len(self._input):
                self._input, self._at = self._fh.read(CHUNK), 0
                if not self._input:
                    if self._obj is not None:
                        raise zstandard.ZstdError("truncated: the input ends inside a frame")
                    return False
            if self._obj is None:
                self._obj = self._dctx.decompressobj()
            piece = self._input[self._at : self._at + self.PIECE]
            self._at += len(piece)
            self._out, self._out_at = self._obj.decompress(piece), 0
            if self._obj.eof:  # the frame ended inside this piece: the rest starts the next
                unused = self._obj.unused_data
                self._obj = None
                self._at -= len(unused)
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        if size == 0 or not self._refill():
            return b""
        data = self._out[self._out_at : self._out_at + size]
        self._out_at += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._fh.close()
        super().close()


class _Zstd:
    """`open` for `.zst` files, as gzip, bz2 and lzma have it."""

    @staticmethod
    def open(path: Path, mode: str = "rb") -> ZstdReader:
        assert mode == "rb"
        return ZstdReader(path)


# One compressed stream: (magic bytes, module with an `open`, the suffix its file name drops).
SINGLE_STREAM: dict[str, tuple[bytes, Any, str]] = {
    "gzip": (b"\x1f\x8b", gzip, ".gz"),
    "bz2": (b"BZh", bz2, ".bz2"),
    "xz": (b"\xfd7zXZ\x00", lzma, ".xz"),
    "zstd": (b"\x28\xb5\x2f\xfd", _Zstd, ".zst"),
}


def split_member(source: str, kind: SourceKind) -> tuple[str, str | None]:
    """A source without its archive member, and the member (URL fragment, or `path#member`).

    For a local path the `#` only counts when the path as given does not exist and the part
    before it ends like an archive (`data.zip#dir/file.tsv`), so names holding `#` still work.
    """
    if kind in ("url", "file"):
        base, fragment = urllib.parse.urldefrag(source)
        return base, urllib.parse.unquote(fragment) or None
    head, sep, member = source.rpartition("#")
    if not sep or not member or Path(source).expanduser().exists():
        return source, None
    if not head.lower().endswith(ARCHIVE_SUFFIXES):
        return source, None
    return head, member


def archive_format(path: Path) -> ArchiveFormat | None:
    """What kind of archive a file is, by its content (never by its name); None: not one."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK\x03\x04") or (head.startswith(b"PK\x05\x06")):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except (OSError, EOFError, lzma.LZMAError):
        pass  # a truncated compressed stream: not a tar we can read; see below
    for name, (magic, _, _) in SINGLE_STREAM.items():
        if head.startswith(magic):
            return name  # type: ignore[return-value]
    return None


def _refuse_unsafe(location: str, name: str) -> None:
    """Bad input for a member name that would land outside an output folder if extracted."""
    norm = name.replace("\\", "/")
    why = ""
    if not norm.strip("/"):
        why = "an empty name"
    elif norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        why = "an absolute path"
    elif ".." in norm.split("/"):
        why = "a '..' component"
    if why:
        raise BadInput(
            f"{location}: refusing archive member {name!r}: {why}, it would land outside "
            "the output folder"
        )


def _pick(location: str, names: list[str], member: str | None) -> str:
    """The member wanted: an exact name, else a unique base name; the only file if unnamed."""
    if member is None:
        if len(names) == 1:
            return names[0]
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        what = "no files" if not names else f"{len(names)} files ({shown})"
        raise BadInput(f"{location}: archive holds {what}; name one as {location}#MEMBER")
    wanted = member.strip("/").removeprefix("./")
    exact = [n for n in names if n.removeprefix("./") == wanted]
    if exact:
        return exact[0]
    by_base = [n for n in names if Path(n).name == wanted]
    if len(by_base) == 1:
        return by_base[0]
    if by_base:
        raise BadInput(f"{location}: archive member {member!r} is ambiguous ({', '.join(by_base)})")
    raise BadInput(f"{location}: archive has no member {member!r}")


def _zip_members(location: str, zf: zipfile.ZipFile) -> list[str]:
    """The regular files of a zip, after checking every entry's name and type."""
    names = []
    for info in zf.infolist():
        _refuse_unsafe(location, info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise BadInput(
                f"{location}: refusing archive member {info.filename!r}: a symbolic link"
            )
        if not info.is_dir():
            names.append(info.filename)
    return names


def _tar_members(location: str, tf: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """The regular files of a tar, after checking every entry's name and type."""
    found = {}
    for info in tf.getmembers():
        _refuse_unsafe(location, info.name)
        if info.issym() or info.islnk():
            kind = "symbolic" if info.issym() else "hard"
            raise BadInput(
                f"{location}: refusing archive member {info.name!r}: a {kind} link "
                f"(to {info.linkname!r})"
            )
        if info.isfile():
            found[info.name] = info
        elif not info.isdir():
            raise BadInput(f"{location}: refusing archive member {info.name!r}: not a regular file")
    return found


def _copy_limited(src: Any, dest: Path, max_bytes: int | None, where: str) -> None:
    """Stream `src` into `dest` (atomically), refusing more than `max_bytes` bytes: the guard
    against an archive member that unpacks to far more than it looked (a decompression bomb)."""
    with atomic_file(dest) as tmp, open(tmp, "wb") as out:
        size = 0
        while chunk := src.read(CHUNK):
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise _too_large(where, max_bytes, verb="unpacks to")
            out.write(chunk)


def extract_member(
    archive: Fetched, member: str | None, folder: Path, max_bytes: int | None = None
) -> Fetched:
    """Stream one member of a zip, tar (any compression) or gzip/bz2/xz file into `folder`.

    Every entry's name and type is checked first (absolute paths, `..`, links and devices
    are refused as bad input naming the member), then only the member wanted is read, as a
    stream, into `folder` under its base name (so its suffix still tells its format; written
    atomically), and stopped as bad input past `max_bytes`. With no member named, an archive
    holding exactly one file gives that file.
    """
    where = archive.location
    fmt = archive_format(archive.path)
    if fmt is None:
        raise BadInput(
            f"{where}: names archive member {member!r} but is not a zip, tar, gzip, bz2, xz "
            "or zstd file"
        )
    chosen = member
    try:
        if fmt == "zip":
            with zipfile.ZipFile(archive.path) as zf:
                chosen = _pick(where, _zip_members(where, zf), member)
                declared = zf.getinfo(chosen).file_size
                if max_bytes is not None and declared > max_bytes:
                    raise _too_large(f"{where}#{chosen}", max_bytes, declared)
                dest = _member_path(folder, chosen)
                with zf.open(chosen) as src:
                    _copy_limited(src, dest, max_bytes, f"{where}#{chosen}")
        elif fmt == "tar":
            with tarfile.open(archive.path, "r:*") as tf:
                files = _tar_members(where, tf)
                chosen = _pick(where, list(files), member)
                if max_bytes is not None and files[chosen].size > max_bytes:
                    raise _too_large(f"{where}#{chosen}", max_bytes, files[chosen].size)
                stream = tf.extractfile(files[chosen])
                assert stream is not None  # a regular file always has a stream
                dest = _member_path(folder, chosen)
                with stream:
                    _copy_limited(stream, dest, max_bytes, f"{where}#{chosen}")
        else:
            _, module, suffix = SINGLE_STREAM[fmt]
            inner = Path(urllib.parse.urlparse(where).path).name.removesuffix(suffix)
            if member is not None and member != inner:
                raise BadInput(
                    f"{where}: a {fmt} file holds one member ({inner!r}), not {member!r}"
                )
            chosen = inner or "member"
            dest = _member_path(folder, chosen)
            with module.open(archive.path, "rb") as src:
                _copy_limited(src, dest, max_bytes, f"{where}#{chosen}")
    except zipfile.BadZipFile as exc:
        raise BadInput(f"{where}: not a valid zip archive ({exc})") from None
    except (
        tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, zstandard.ZstdError, OSError
    ) as exc:  # fmt: skip
        raise BadInput(f"{where}: corrupt or truncated {fmt} archive ({exc})") from None
    except RuntimeError as exc:  # zipfile: an encrypted member
        raise BadInput(f"{where}: cannot read member {chosen!r} ({exc})") from None
    sha, size = sha256_and_size(dest)
    return Fetched(
        path=dest,
        location=f"{where}#{chosen}",
        sha256=sha,
        bytes=size,
        archive={"location": where, "sha256": archive.sha256, "bytes": archive.bytes},
    )


def _member_path(folder: Path, member: str) -> Path:
    """Where a member is written: its base name (checked safe already) inside `folder`."""
    return folder / (Path(member.replace("\\", "/")).name or "member")


def unpack(
    fetched: Fetched, member: str | None, work_dir: Path, max_bytes: int | None = None
) -> Fetched:
    """The named member of an archive; an unnamed archive's only file; else the file itself."""
    if member is None and archive_format(fetched.path) is None:
        return fetched
    return extract_member(fetched, member, work_dir / "members", max_bytes)


def _unpack(fetched: Fetched, member: str | None, work_dir: Path, max_bytes: int | None) -> Fetched:
    """The member of an archive when the pinned file comes archived, else the file itself."""
    if member is None or archive_format(fetched.path) is None:
        return fetched
    return extract_member(fetched, member, work_dir / "members", max_bytes)


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
    options: FetchOptions,
    archive_name: str | None = None,
) -> Fetched:
    """A file known by name and sha256: from the mirror folder if it has it, else from `urls`.

    `archive_name` is the name of an archive the URLs serve (zip, tar or gzip; its member
    `file_name` is what the sha256 pins); the mirror folder may hold the bare file or the
    archive. A file in the mirror folder with the wrong sha256 is bad input at once (someone
    put it there); the URLs are mirrors of each other, tried in order, so one that fails or
    serves the wrong bytes gives way to the next, and only when all fail is it bad input,
    naming each URL and what went wrong.
    """
    member = file_name if archive_name else None
    max_bytes = options.max_bytes
    if mirror is not None:
        for name in (file_name, archive_name):
            if name and (mirror / name).is_file():
                found = local_file(mirror / name, str((mirror / name).resolve()))
                return _check(_unpack(found, member, work_dir, max_bytes), sha256)
    if not urls:
        raise BadInput(f"{file_name}: not in the mirror folder and no URL to download it from")
    errors = []
    for url in urls:
        dest = work_dir / (archive_name or file_name)
        try:
            fetched = download(url, dest, options)
            return _check(_unpack(fetched, member, work_dir, max_bytes), sha256)
        except BadInput as exc:
            errors.append(str(exc))
    raise BadInput("; ".join(errors))


def fetch_source(
    source: str,
    key: str,
    work_dir: Path,
    options: FetchOptions,
) -> Fetched:
    """A user-given source (http(s) URL, file:// URL or local path), its sha256 recorded.

    A member named after `#` (`data.zip#dir/file.tsv`) is read out of the archive; an archive
    named without a member gives its only file; a lone `.gz`/`.bz2`/`.xz` is decompressed.
    """
    kind = source_kind(source, key)
    base, member = split_member(source, kind)
    if kind == "path":
        path = Path(base).expanduser()
        if not path.is_file():
            raise BadInput(f"params key '{key}': {base}: file not found")
        fetched = local_file(path, str(path.resolve()))
    elif kind == "file":
        path = file_url_path(base)
        if not path.is_file():
            raise BadInput(f"params key '{key}': {base}: file not found")
        fetched = local_file(path, base)
    else:
        name = Path(urllib.parse.urlparse(base).path).name or "download"
        fetched = download(base, work_dir / name, options)
    return unpack(fetched, member, work_dir, options.max_bytes)
