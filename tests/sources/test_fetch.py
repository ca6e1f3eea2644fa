"""Fetching against a real HTTP server on 127.0.0.1: retries, 404, HTML, truncation, sha256,
slow and stalled bodies, size limits, mirror lists, and members of zip, tar and gzip archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import socket
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.http import Reply, Request, Route, Server, byte_range, html, serve

from gptpipe.errors import BadInput
from gptpipe.sources.datasets import load_source
from gptpipe.sources.fetch import (
    FetchOptions,
    download,
    extract_member,
    fetch_pinned,
    fetch_source,
    file_url_path,
    local_file,
    sha256_and_size,
    source_kind,
    split_member,
)

BODY = ("Data file line.\n" * 5000).encode()
BODY_SHA = hashlib.sha256(BODY).hexdigest()
MEMBER = "SMSSpamCollection"
MEMBER_BODY = b"ham\thello there\nspam\tWIN a prize now\n"
MEMBER_SHA = hashlib.sha256(MEMBER_BODY).hexdigest()


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"folder/{name}", data)
        zf.writestr("readme.txt", "about")
    return buffer.getvalue()


ZIP_BODY = zipped(MEMBER, MEMBER_BODY)
TSV = b"yes\tfine\nno\tnope\n"
BOMB = (b"spam\tbuy now\n" * 700_000)[: 8 << 20]  # 8 MiB that compress to a few KB


def tarred(entries: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    """A tar archive of (name, data) files and ready-made entries (links, odd names)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tf.addfile(info, io.BytesIO(entry[1]))
    return buffer.getvalue()


def link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


# Served under /archive/NAME.
ARCHIVES = {
    "data.zip": zip_of({"dir/data.tsv": TSV, "dir/readme.txt": b"about"}),
    "data.tar.gz": tarred([("pkg/", b""), ("pkg/sub/data.tsv", TSV), ("pkg/readme", b"x")]),
    "data.tsv.gz": gzip.compress(TSV),
    "one.zip": zip_of({"only/data.tsv": TSV}),
    # Decompression bombs: a few KB that unpack to 8 MB.
    "bomb.zip": zip_of({"bomb.tsv": BOMB}),
    "bomb.tar.gz": tarred([("bomb.tsv", BOMB)]),
    "bomb.tsv.gz": gzip.compress(BOMB),
}


def _once(first: Reply, then: Route) -> Route:
    """`first` for the first request on a path, `then` for every later one."""

    def route(request: Request) -> Reply:
        if request.hit == 1:
            return first
        return then(request) if callable(then) else then

    return route


def _flaky(request: Request) -> Reply:
    """Fails twice (500, then 503), then serves the file."""
    if request.hit < 3:
        return Reply(b"busy", status=500 if request.hit == 1 else 503, content_type="text/plain")
    return Reply(BODY, content_type="text/plain")


ROUTES: dict[str, Route] = {
    "/good.txt": Reply(BODY, content_type="text/plain"),
    "/data.zip": Reply(ZIP_BODY, content_type="application/zip"),
    "/flaky.txt": _flaky,
    # No Content-Length: the size shows as it streams.
    "/no-length.txt": Reply(BODY, content_type="text/plain", unannounced=True),
    # Downloads fine, but is not UTF-8 text.
    "/latin1.tsv": Reply("yes\tcaf\u00e9\nno\tna\u00efve\n".encode("latin-1")),
    "/good.tsv": Reply(TSV, content_type="text/plain"),
    "/always500.txt": Reply(b"oops", status=500, content_type="text/plain"),
    "/page.txt": html("<p>Sign in</p>"),
    "/sniffed.txt": Reply(
        b"\n  <!DOCTYPE html>\n<html><body>login</body></html>", content_type="text/plain"
    ),
    "/truncated.txt": Reply(BODY, content_type="text/plain", stop_after=1000),
    "/truncated-once.txt": _once(
        Reply(BODY, content_type="text/plain", stop_after=1000),
        Reply(BODY, content_type="text/plain"),
    ),
    # Drops the connection mid-body, then honours the Range request for the rest.
    "/resumable.txt": _once(
        Reply(BODY, content_type="text/plain", stop_after=30000), lambda r: byte_range(BODY, r)
    ),
    "/slow.txt": Reply(BODY, content_type="text/plain", delay=1.5),
    # Slow but steady: a pause shorter than the timeout between pieces.
    "/trickle.txt": Reply(BODY, content_type="text/plain", pieces=5, pause=0.15),
    # Half the body, then a pause longer than the timeout.
    "/stalls.txt": Reply(BODY, content_type="text/plain", pieces=2, pause=1.0),
    "/stalls-once.txt": _once(
        Reply(BODY, content_type="text/plain", pieces=2, pause=1.0), lambda r: byte_range(BODY, r)
    ),
    **{f"/archive/{name}": Reply(data) for name, data in ARCHIVES.items()},
}


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve(ROUTES) as srv:
        yield srv


def ranges(server: Server, path: str) -> list[str | None]:
    """The Range header of each request `path` received, in order."""
    return [r.headers.get("Range") for r in server.requests(path)]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- download


def test_download_streams_the_whole_body_and_hashes_it(server, tmp_path):
    fetched = download(
        server.url("/good.txt"), tmp_path / "good.txt", options=FetchOptions(timeout=5, retries=1)
    )
    assert (tmp_path / "good.txt").read_bytes() == BODY
    assert (fetched.sha256, fetched.bytes) == (BODY_SHA, len(BODY))
    assert fetched.location == server.url("/good.txt")
    assert leftovers(tmp_path) == ["good.txt"]


def test_404_is_bad_input_at_once_naming_the_url(server, tmp_path):
    url = server.url("/nowhere.txt")
    with pytest.raises(BadInput, match=r"nowhere\.txt: HTTP 404") as err:
        download(url, tmp_path / "x.txt", options=FetchOptions(timeout=5, retries=3, backoff=0))
    assert url in str(err.value) and "\n" not in str(err.value)
    assert server.hits["/nowhere.txt"] == 1
    assert leftovers(tmp_path) == []


def test_5xx_is_retried_until_the_file_comes(server, tmp_path):
    fetched = download(
        server.url("/flaky.txt"),
        tmp_path / "f.txt",
        options=FetchOptions(timeout=5, retries=3, backoff=0),
    )
    assert fetched.sha256 == BODY_SHA
    assert server.hits["/flaky.txt"] == 3
    assert leftovers(tmp_path) == ["f.txt"]


def test_5xx_on_every_attempt_gives_up_after_the_retries(server, tmp_path):
    with pytest.raises(BadInput, match=r"always500\.txt: HTTP 500.*after 2 attempts"):
        download(
            server.url("/always500.txt"),
            tmp_path / "a.txt",
            options=FetchOptions(timeout=5, retries=2, backoff=0),
        )
    assert server.hits["/always500.txt"] == 2
    assert leftovers(tmp_path) == []


def test_retries_back_off_exponentially(server, tmp_path):
    start = time.monotonic()
    with pytest.raises(BadInput):
        download(
            server.url("/always500.txt"),
            tmp_path / "a.txt",
            options=FetchOptions(timeout=5, retries=3, backoff=0.1),
        )
    assert time.monotonic() - start >= 0.1 + 0.2


def test_html_content_type_is_bad_input_without_retry(server, tmp_path):
    with pytest.raises(BadInput, match="HTML page"):
        download(
            server.url("/page.txt"),
            tmp_path / "p.txt",
            options=FetchOptions(timeout=5, retries=3, backoff=0),
        )
    assert server.hits["/page.txt"] == 1
    assert leftovers(tmp_path) == []


def test_html_body_is_recognised_whatever_the_content_type(server, tmp_path):
    with pytest.raises(BadInput, match="HTML page"):
        download(
            server.url("/sniffed.txt"),
            tmp_path / "s.txt",
            options=FetchOptions(timeout=5, retries=3, backoff=0),
        )
    assert leftovers(tmp_path) == []


def test_truncated_body_is_retried_then_bad_input(server, tmp_path):
    with pytest.raises(BadInput, match=rf"truncated body \(got 1000 of {len(BODY)} bytes\)"):
        download(
            server.url("/truncated.txt"),
            tmp_path / "t.txt",
            options=FetchOptions(timeout=5, retries=2, backoff=0),
        )
    assert server.hits["/truncated.txt"] == 2
    assert leftovers(tmp_path) == []


def test_a_truncated_first_attempt_is_recovered(server, tmp_path):
    url = server.url("/truncated-once.txt")
    fetched = download(
        url, tmp_path / "t.txt", options=FetchOptions(timeout=5, retries=2, backoff=0)
    )
    assert fetched.sha256 == BODY_SHA and (tmp_path / "t.txt").read_bytes() == BODY


def test_a_dropped_connection_resumes_with_a_range_request(server, tmp_path):
    url = server.url("/resumable.txt")
    fetched = download(
        url, tmp_path / "r.txt", options=FetchOptions(timeout=5, retries=2, backoff=0)
    )
    assert ranges(server, "/resumable.txt") == [
        None,
        "bytes=30000-",
    ]  # only the missing bytes asked for again
    assert fetched.sha256 == BODY_SHA and (tmp_path / "r.txt").read_bytes() == BODY
    assert leftovers(tmp_path) == ["r.txt"]


def test_a_stalled_server_times_out(server, tmp_path):
    with pytest.raises(BadInput, match=r"slow\.txt: no data for 0\.3 s.*after 1 attempts"):
        download(
            server.url("/slow.txt"),
            tmp_path / "s.txt",
            options=FetchOptions(timeout=0.3, retries=1, backoff=0),
        )
    assert leftovers(tmp_path) == []


def test_connection_refused_is_bad_input_after_retries(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BadInput, match=r"connection failed.*after 2 attempts"):
        download(
            f"http://127.0.0.1:{port}/x.txt",
            tmp_path / "x",
            options=FetchOptions(timeout=2, retries=2, backoff=0),
        )
    assert leftovers(tmp_path) == []


def test_an_existing_file_survives_a_failed_download(server, tmp_path):
    (tmp_path / "keep.txt").write_text("old")
    with pytest.raises(BadInput):
        download(
            server.url("/nowhere.txt"),
            tmp_path / "keep.txt",
            options=FetchOptions(timeout=5, retries=1),
        )
    assert (tmp_path / "keep.txt").read_text() == "old"
    assert leftovers(tmp_path) == ["keep.txt"]


# --------------------------------------------------------------------------- pinned files


def test_pinned_file_comes_from_the_mirror_first(server, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "good.txt").write_bytes(BODY)
    work = tmp_path / "work"
    work.mkdir()
    before = server.hits["/good.txt"]
    fetched = fetch_pinned(
        "good.txt",
        [server.url("/good.txt")],
        BODY_SHA,
        work,
        mirror=mirror,
        options=FetchOptions(timeout=5, retries=1),
    )
    assert fetched.path == mirror / "good.txt" and fetched.location == str(mirror / "good.txt")
    assert server.hits["/good.txt"] == before  # no download
    assert leftovers(work) == []


def test_pinned_file_with_a_wrong_hash_in_the_mirror_is_bad_input_naming_it(server, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "good.txt").write_bytes(BODY + b"tampered")
    with pytest.raises(BadInput, match=r"mirror/good\.txt: sha256 mismatch"):
        fetch_pinned(
            "good.txt",
            [server.url("/good.txt")],
            BODY_SHA,
            tmp_path,
            mirror=mirror,
            options=FetchOptions(timeout=5, retries=1),
        )


def test_pinned_file_missing_from_the_mirror_is_downloaded_and_verified(server, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    fetched = fetch_pinned(
        "good.txt",
        [server.url("/good.txt")],
        BODY_SHA,
        work,
        mirror=mirror,
        options=FetchOptions(timeout=5, retries=1),
    )
    assert fetched.location == server.url("/good.txt") and fetched.sha256 == BODY_SHA
    assert (work / "good.txt").read_bytes() == BODY


def test_pinned_url_with_a_wrong_hash_is_bad_input_naming_the_url(server, tmp_path):
    with pytest.raises(BadInput, match=r"good\.txt: sha256 mismatch \(expected 0+, got"):
        fetch_pinned(
            "good.txt",
            [server.url("/good.txt")],
            "0" * 64,
            tmp_path,
            mirror=None,
            options=FetchOptions(timeout=5, retries=1),
        )


def test_next_url_is_tried_when_one_fails(server, tmp_path):
    urls = [server.url("/gone.txt"), server.url("/good.txt")]
    fetched = fetch_pinned(
        "good.txt",
        urls,
        BODY_SHA,
        tmp_path,
        mirror=None,
        options=FetchOptions(timeout=5, retries=1),
    )
    assert fetched.location == urls[1]


def test_zipped_pinned_file_is_extracted_and_the_member_verified(server, tmp_path):
    fetched = fetch_pinned(
        MEMBER,
        [server.url("/data.zip")],
        MEMBER_SHA,
        tmp_path,
        mirror=None,
        options=FetchOptions(timeout=5, retries=1),
        archive_name="data.zip",
    )
    assert fetched.path.read_bytes() == MEMBER_BODY and fetched.sha256 == MEMBER_SHA
    assert fetched.archive == {
        "location": server.url("/data.zip"),
        "sha256": hashlib.sha256(ZIP_BODY).hexdigest(),
        "bytes": len(ZIP_BODY),
    }


def test_zipped_pinned_file_may_sit_zipped_in_the_mirror(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "data.zip").write_bytes(ZIP_BODY)
    work = tmp_path / "work"
    work.mkdir()
    fetched = fetch_pinned(
        MEMBER,
        [],
        MEMBER_SHA,
        work,
        mirror=mirror,
        options=FetchOptions(timeout=5, retries=1),
        archive_name="data.zip",
    )
    assert fetched.path.read_bytes() == MEMBER_BODY


def test_zip_without_the_member_is_bad_input(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "data.zip").write_bytes(zipped("Other", MEMBER_BODY))
    with pytest.raises(BadInput, match="no member 'SMSSpamCollection'"):
        fetch_pinned(
            MEMBER,
            [],
            MEMBER_SHA,
            tmp_path,
            mirror=mirror,
            options=FetchOptions(timeout=5, retries=1),
            archive_name="data.zip",
        )


def test_pinned_file_nowhere_to_be_found(tmp_path):
    with pytest.raises(BadInput, match="not in the mirror folder and no URL"):
        fetch_pinned(
            "x.txt",
            [],
            BODY_SHA,
            tmp_path,
            mirror=tmp_path,
            options=FetchOptions(timeout=5, retries=1),
        )


# --------------------------------------------------------------------------- any source


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("https://example.org/a.txt", "url"),
        ("HTTP://example.org/a.txt", "url"),
        ("file:///tmp/a.txt", "file"),
        ("data/a.txt", "path"),
        ("a.txt", "path"),
    ],
)
def test_source_kinds(text, kind):
    assert source_kind(text, "data.corpus") == kind


@pytest.mark.parametrize("text", ["ftp://example.org/a.txt", "s3://bucket/a.txt"])
def test_other_schemes_are_bad_input_naming_the_key(text):
    with pytest.raises(BadInput, match=r"'data\.corpus': unsupported URL scheme"):
        source_kind(text, "data.corpus")


def test_fetch_source_reads_paths_and_file_urls_in_place(tmp_path):
    path = tmp_path / "my corpus.txt"
    path.write_bytes(BODY)
    by_path = fetch_source(
        str(path), "data.corpus", tmp_path, options=FetchOptions(timeout=5, retries=1)
    )
    url = path.as_uri()
    by_url = fetch_source(url, "data.corpus", tmp_path, options=FetchOptions(timeout=5, retries=1))
    assert by_path.path == path and by_path.sha256 == BODY_SHA == by_url.sha256
    assert by_url.location == url and file_url_path(url) == path
    assert sha256_and_size(path) == (BODY_SHA, len(BODY))


def test_fetch_source_downloads_urls(server, tmp_path):
    fetched = fetch_source(
        server.url("/good.txt"), "data.corpus", tmp_path, options=FetchOptions(timeout=5, retries=1)
    )
    assert fetched.path == tmp_path / "good.txt" and fetched.sha256 == BODY_SHA


@pytest.mark.parametrize("make", [lambda p: str(p), lambda p: p.as_uri()], ids=["path", "file"])
def test_missing_local_source_is_bad_input_naming_key_and_file(tmp_path, make):
    source = make(tmp_path / "absent.txt")
    with pytest.raises(BadInput, match=r"'data\.classify': .*absent\.txt: file not found"):
        fetch_source(source, "data.classify", tmp_path, options=FetchOptions(timeout=5, retries=1))


# --------------------------------------------------------------------------- slow bodies


def test_a_slow_but_steady_body_completes_within_the_timeout(server, tmp_path):
    start = time.monotonic()
    fetched = download(
        server.url("/trickle.txt"), tmp_path / "t.txt", options=FetchOptions(timeout=1, retries=1)
    )
    assert time.monotonic() - start >= 4 * 0.15  # it really was slow
    assert fetched.sha256 == BODY_SHA and server.hits["/trickle.txt"] == 1


def test_a_body_that_stalls_past_the_timeout_is_retried_then_bad_input(server, tmp_path):
    with pytest.raises(
        BadInput, match=r"stalls\.txt: no data for 0\.3 s \(gave up after 2 attempts"
    ):
        download(
            server.url("/stalls.txt"),
            tmp_path / "s.txt",
            options=FetchOptions(timeout=0.3, retries=2, backoff=0),
        )
    assert server.hits["/stalls.txt"] == 2
    assert leftovers(tmp_path) == []


def test_a_stalled_body_resumes_where_it_stopped(server, tmp_path):
    url = server.url("/stalls-once.txt")
    fetched = download(
        url, tmp_path / "s.txt", options=FetchOptions(timeout=0.3, retries=2, backoff=0)
    )
    first, second = ranges(server, "/stalls-once.txt")
    assert first is None and second == f"bytes={len(BODY) // 2}-"  # the half it had
    assert fetched.sha256 == BODY_SHA and leftovers(tmp_path) == ["s.txt"]


# --------------------------------------------------------------------------- mirror lists


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/x.txt"


def files(folder: Path) -> list[str]:
    """The files anywhere below a folder (empty folders do not count)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def load(kind, sources, tmp_path, retries=2):
    """`load_source` of a list of mirrors into tmp_path/out, as the download stage calls it."""
    options = FetchOptions(timeout=2, retries=retries, backoff=0)
    return load_source(
        kind, sources, f"data.{kind}", tmp_path / "work", tmp_path / "out", options, mirror=None
    )


def test_mirrors_are_tried_in_order_until_one_works(server, tmp_path):
    urls = [refused_url(), server.url("/not-here.txt"), server.url("/good.txt")]
    loaded = load("corpus", urls, tmp_path)
    assert loaded.provenance["location"] == urls[2]
    assert loaded.provenance["upstream"]["sha256"] == BODY_SHA
    assert server.hits["/not-here.txt"] == 1  # a 404 is not retried, the next mirror is
    assert files(tmp_path) == ["out"]  # the downloads are gone


def test_mirrors_may_mix_urls_and_paths(server, tmp_path):
    local = tmp_path / "local.txt"
    local.write_bytes(BODY)
    loaded = load("corpus", [str(tmp_path / "absent.txt"), str(local)], tmp_path, retries=1)
    assert loaded.provenance["location"] == str(local.resolve())
    assert local.read_bytes() == BODY  # a local mirror is read in place, never removed


def test_a_mirror_whose_data_is_malformed_gives_way_to_the_next(server, tmp_path):
    urls = [server.url("/latin1.tsv"), server.url("/archive/data.zip"), server.url("/good.tsv")]
    loaded = load("classify", urls, tmp_path)
    assert loaded.provenance["location"] == urls[2]
    assert (tmp_path / "out").read_bytes() == TSV
    with pytest.raises(BadInput) as err:
        load("classify", urls[:2], tmp_path)
    message = str(err.value)
    assert message.startswith("params key 'data.classify': none of the 2 mirrors worked: ")
    assert "latin1.tsv: not UTF-8 text (invalid byte at offset 7)" in message
    assert "data.zip: archive holds 2 files" in message
    assert "\n" not in message and files(tmp_path) == ["out"]  # the earlier good one


def test_when_no_mirror_works_the_error_names_the_key_and_each_failure(server, tmp_path):
    urls = [refused_url(), server.url("/page.txt")]
    with pytest.raises(BadInput) as err:
        load("corpus", urls, tmp_path, retries=1)
    message = str(err.value)
    assert message.startswith("params key 'data.corpus': none of the 2 mirrors worked: ")
    assert "connection failed" in message and "page.txt: served an HTML page" in message
    assert "\n" not in message and files(tmp_path) == []


def test_a_pinned_file_falls_back_to_the_next_url_on_a_wrong_hash(server, tmp_path):
    local = tmp_path / "bad.txt"
    local.write_bytes(b"stale copy")
    urls = [server.url("/truncated.txt"), server.url("/good.txt")]
    with pytest.raises(BadInput, match=r"truncated\.txt: truncated body"):
        fetch_pinned(
            "g.txt",
            urls[:1],
            BODY_SHA,
            tmp_path,
            mirror=None,
            options=FetchOptions(timeout=2, retries=1),
        )
    urls = [server.url("/sniffed.txt"), server.url("/data.zip"), server.url("/good.txt")]
    fetched = fetch_pinned(
        "good.txt",
        urls,
        BODY_SHA,
        tmp_path,
        mirror=None,
        options=FetchOptions(timeout=2, retries=1, backoff=0),
    )
    assert fetched.location == urls[2]
    with pytest.raises(BadInput, match=r"data\.zip: sha256 mismatch.*good\.txt: sha256 mismatch"):
        fetch_pinned(
            "good.txt",
            urls[1:],
            "0" * 64,
            tmp_path,
            mirror=None,
            options=FetchOptions(timeout=2, retries=1),
        )


# --------------------------------------------------------------------------- archives


@pytest.mark.parametrize(
    ("name", "member", "location_member"),
    [
        ("data.zip", "dir/data.tsv", "dir/data.tsv"),
        ("data.zip", "data.tsv", "dir/data.tsv"),  # a unique base name is enough
        ("data.tar.gz", "pkg/sub/data.tsv", "pkg/sub/data.tsv"),
        ("data.tar.gz", "data.tsv", "pkg/sub/data.tsv"),
        ("data.tsv.gz", "", "data.tsv"),  # one member: no need to name it
        ("data.tsv.gz", "data.tsv", "data.tsv"),
        ("one.zip", "", "only/data.tsv"),  # the only file of an archive
    ],
)
def test_archive_members_over_http(server, tmp_path, name, member, location_member):
    url = server.url(f"/archive/{name}")
    source = f"{url}#{member}" if member else url
    fetched = fetch_source(
        source, "data.classify", tmp_path, options=FetchOptions(timeout=5, retries=1)
    )
    assert fetched.path.read_bytes() == TSV
    assert fetched.location == f"{url}#{location_member}"
    assert fetched.archive == {
        "location": url,
        "sha256": hashlib.sha256(ARCHIVES[name]).hexdigest(),
        "bytes": len(ARCHIVES[name]),
    }


@pytest.mark.parametrize("name", ["data.zip", "data.tar.gz", "data.tsv.gz"])
def test_archive_members_from_local_paths_and_file_urls(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(ARCHIVES[name])
    work = tmp_path / "work"
    for source in (f"{path}#data.tsv", f"{path.as_uri()}#data.tsv"):
        fetched = fetch_source(
            source, "data.classify", work, options=FetchOptions(timeout=5, retries=1)
        )
        assert fetched.path.read_bytes() == TSV and fetched.path.parent == work / "members"


def test_a_hash_in_a_plain_file_name_is_part_of_the_name(tmp_path):
    path = tmp_path / "notes#1.txt"
    path.write_bytes(BODY)
    assert split_member(str(path), "path") == (str(path), None)
    assert split_member("a/data.tar.gz#x/y.tsv", "path") == ("a/data.tar.gz", "x/y.tsv")
    assert split_member("http://h/a.zip#d%20e.tsv", "url") == ("http://h/a.zip", "d e.tsv")
    assert (
        fetch_source(
            str(path), "data.corpus", tmp_path, options=FetchOptions(timeout=5, retries=1)
        ).path
        == path
    )


@pytest.mark.parametrize(
    ("data", "member", "message"),
    [
        (ARCHIVES["data.zip"], "dir/missing.tsv", "has no member 'dir/missing.tsv'"),
        (ARCHIVES["data.zip"], None, "archive holds 2 files (dir/data.tsv, dir/readme.txt)"),
        (zip_of({"a/x.tsv": TSV, "b/x.tsv": TSV}), "x.tsv", "'x.tsv' is ambiguous"),
        (ARCHIVES["data.tsv.gz"], "other.tsv", "holds one member ('data.tsv'), not 'other.tsv'"),
        (ARCHIVES["data.tsv.gz"][:-12], None, "corrupt or truncated gzip archive"),
        (ARCHIVES["data.tar.gz"][:-40], "data.tsv", "corrupt or truncated"),
        (BODY, "data.tsv", "names archive member 'data.tsv' but is not a zip, tar"),
    ],
    ids=["missing", "unnamed", "ambiguous", "gz name", "truncated gz", "truncated tar", "plain"],
)
def test_bad_archives_are_bad_input_naming_the_file(tmp_path, data, member, message):
    path = tmp_path / "data.tsv.gz"
    path.write_bytes(data)
    with pytest.raises(BadInput, match=r"data\.tsv\.gz") as err:
        extract_member(local_file(path, str(path)), member, tmp_path / "out")
    assert message in str(err.value)
    assert not (tmp_path / "out").exists() or leftovers(tmp_path / "out") == []


UNSAFE = {
    "zip dotdot": (zip_of({"ok.tsv": TSV, "../evil.tsv": TSV}), "'../evil.tsv': a '..' component"),
    "zip absolute": (zip_of({"/etc/evil.tsv": TSV}), "'/etc/evil.tsv': an absolute path"),
    "tar dotdot": (tarred([("ok.tsv", TSV), ("a/../../evil.tsv", TSV)]), "'a/../../evil.tsv'"),
    "tar absolute": (tarred([("/tmp/evil.tsv", TSV)]), "'/tmp/evil.tsv': an absolute path"),
    "tar symlink": (
        tarred([("ok.tsv", TSV), link("data.tsv", "/etc/passwd", tarfile.SYMTYPE)]),
        "'data.tsv': a symbolic link (to '/etc/passwd')",
    ),
    "tar hardlink": (
        tarred([("ok.tsv", TSV), link("data.tsv", "ok.tsv", tarfile.LNKTYPE)], "w"),
        "'data.tsv': a hard link (to 'ok.tsv')",
    ),
}


@pytest.mark.parametrize("case", list(UNSAFE), ids=list(UNSAFE))
def test_members_that_would_land_outside_are_refused_naming_them(tmp_path, case):
    data, message = UNSAFE[case]
    path = tmp_path / "evil.archive"
    path.write_bytes(data)
    work = tmp_path / "work"
    with pytest.raises(BadInput, match="refusing archive member") as err:
        fetch_source(
            f"{path.as_uri()}#ok.tsv",
            "data.classify",
            work,
            options=FetchOptions(timeout=5, retries=1),
        )
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not work.exists() or leftovers(work) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.archive"]  # nothing extracted


def test_a_fragment_on_a_plain_file_is_bad_input(server, tmp_path):
    with pytest.raises(BadInput, match=r"good\.txt: names archive member 'x' but is not"):
        fetch_source(
            server.url("/good.txt#x"),
            "data.corpus",
            tmp_path,
            options=FetchOptions(timeout=5, retries=1),
        )


# --------------------------------------------------------------------------- size limits


@pytest.mark.parametrize("path", ["/good.txt", "/no-length.txt"])
def test_a_body_over_the_size_limit_is_bad_input_at_once(server, tmp_path, path):
    """Refused on the announced length when there is one, else as the bytes arrive."""
    before = server.hits[path]
    with pytest.raises(BadInput, match=r"the size limit of 4096 bytes \(data\.max_bytes\)$"):
        download(
            server.url(path),
            tmp_path / "x.txt",
            options=FetchOptions(timeout=5, retries=3, max_bytes=4096),
        )
    assert server.hits[path] == before + 1  # not retried
    assert leftovers(tmp_path) == []
    fetched = download(
        server.url(path),
        tmp_path / "x.txt",
        options=FetchOptions(timeout=5, retries=1, max_bytes=len(BODY)),
    )
    assert fetched.sha256 == BODY_SHA


@pytest.mark.parametrize("name", ["bomb.zip", "bomb.tar.gz", "bomb.tsv.gz"])
def test_a_decompression_bomb_stops_at_the_size_limit(server, tmp_path, name):
    source = server.url(f"/archive/{name}")
    assert len(ARCHIVES[name]) < 64 * 1024  # small on the wire
    with pytest.raises(BadInput, match=rf"{name}#bomb\.tsv: .* the size limit of 1048576 bytes"):
        fetch_source(
            source,
            "data.classify",
            tmp_path,
            options=FetchOptions(timeout=5, retries=1, max_bytes=1 << 20),
        )
    assert all(p.stat().st_size <= 64 * 1024 for p in tmp_path.rglob("*") if p.is_file())
    fetched = fetch_source(
        source,
        "data.classify",
        tmp_path,
        options=FetchOptions(timeout=5, retries=1, max_bytes=9 << 20),
    )
    assert fetched.bytes == 8 << 20


def test_a_zip_member_that_lies_about_its_size_gets_nowhere(tmp_path):
    """Declared small, it passes the size check, but zipfile reads no more than declared and
    then fails the CRC: bad input, nothing written."""
    data = bytearray(zip_of({"bomb.tsv": BOMB}))
    header = data.index(b"PK\x01\x02")  # the central directory entry: declare 10 bytes
    data[header + 24 : header + 28] = (10).to_bytes(4, "little")
    archive = tmp_path / "liar.zip"
    archive.write_bytes(bytes(data))
    with pytest.raises(BadInput, match=r"liar\.zip: not a valid zip archive \(Bad CRC"):
        extract_member(local_file(archive, str(archive)), None, tmp_path / "out", 1 << 20)
    assert not (tmp_path / "out").exists() or leftovers(tmp_path / "out") == []
