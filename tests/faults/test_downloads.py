"""Misbehaving servers and hostile archives, against a scripted HTTP server on 127.0.0.1:
downloads that stop half-way, HTML pages, wrong hashes, redirect loops, redirects and URLs
with other schemes, malformed URLs; archive members escaping the folder, links in archives.
Every row: exit 2, one line naming the URL or file, and no output folder or partial file."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile

import pytest
from helpers.faults import cli, expect_bad_input, leftovers, raises_bad_input
from helpers.http import Reply, html, redirect, serve

from gptpipe.sources.fetch import FetchOptions, fetch_pinned

BODY = b"A line of the corpus.\n" * 2000


def _routes(base: str) -> dict[str, Reply]:
    return {
        "/half": Reply(BODY, stop_after=len(BODY) // 2),
        "/html": html(),
        "/sniffed-html": Reply(b"<!DOCTYPE html><html><body>login</body></html>"),
        "/loop-a": redirect("/loop-b"),
        "/loop-b": redirect("/loop-a"),
        "/self": redirect("/self", 301),
        "/to-file": redirect("file:///etc/passwd"),
        "/to-ftp": redirect("ftp://127.0.0.1/corpus.txt", 307),
        "/missing": Reply(b"gone", status=404, content_type="text/plain"),
        "/broken": Reply(b"oops", status=500, content_type="text/plain"),
        "/huge": Reply(b"x" * 10, announce=10**12),
        "/good": Reply(BODY, content_type="text/plain"),
    }


# (case id, corpus source (a path on the server, or a whole URL), fragments)
DOWNLOADS = [
    ("stops-half-way", "/half", ["/half", "gave up after 2 attempts", "truncated"]),
    ("html-page", "/html", ["/html", "HTML page"]),
    ("html-without-content-type", "/sniffed-html", ["/sniffed-html", "HTML page"]),
    ("redirect-loop", "/loop-a", ["/loop-a", "redirect loop"]),
    ("redirect-to-itself", "/self", ["/self", "redirect loop"]),
    ("redirect-to-file-scheme", "/to-file", ["/to-file", "only http(s) redirects"]),
    ("redirect-to-ftp", "/to-ftp", ["/to-ftp", "only http(s) redirects"]),
    ("not-found", "/missing", ["/missing", "HTTP 404"]),
    ("server-error", "/broken", ["/broken", "HTTP 500", "gave up"]),
    ("announced-too-large", "/huge", ["/huge", "over the size limit"]),
    ("other-scheme", "ftp://127.0.0.1/corpus.txt", ["data.corpus", "unsupported URL scheme"]),
    ("malformed-url", "http://[::1/corpus.txt", ["[::1", "URL"]),
]


@pytest.mark.parametrize(
    ("source", "fragments"), [d[1:] for d in DOWNLOADS], ids=[d[0] for d in DOWNLOADS]
)
def test_bad_download(tmp_path, monkeypatch, source, fragments):
    monkeypatch.delenv("GPTPIPE_MIRROR", raising=False)
    with serve(_routes("")) as server:
        url = server.url(source) if source.startswith("/") else source
        args = ["download", "--params", "params.yaml", "--out", tmp_path / "raw"]
        args += ["-S", f"data.corpus={url}", "-S", "data.retries=2", "-S", "data.timeout=5"]
        args += ["-S", "data.max_bytes=1000000"]
        expect_bad_input(cli(args, tmp_path), *fragments)
    assert not (tmp_path / "raw").exists() and leftovers(tmp_path) == []


def test_wrong_hash(tmp_path):
    with serve({"/good": Reply(BODY)}) as server:
        raises_bad_input(
            lambda: fetch_pinned(
                "corpus.txt",
                [server.url("/good")],
                hashlib.sha256(b"something else").hexdigest(),
                tmp_path,
                mirror=None,
                options=FetchOptions(timeout=5, retries=1, backoff=0),
            ),
            "sha256",
        )
    assert leftovers(tmp_path) == []


def _tar(*entries: tarfile.TarInfo | tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tf.addfile(info, io.BytesIO(entry[1]))
    return buffer.getvalue()


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


ARCHIVES = [
    ("zip-member-escapes", "data.zip", _zip({"../evil.txt": BODY, "corpus.txt": BODY}), "'..'"),
    ("zip-absolute-member", "data.zip", _zip({"/etc/evil.txt": BODY}), "absolute"),
    ("tar-member-escapes", "data.tar.gz", _tar(("a/../../evil.txt", BODY)), "'..'"),
    (
        "tar-symlink",
        "data.tar.gz",
        _tar(("corpus.txt", BODY), _link("x", "/etc/passwd", tarfile.SYMTYPE)),
        "link",
    ),
    (
        "tar-hardlink",
        "data.tar.gz",
        _tar(("corpus.txt", BODY), _link("y", "/etc/passwd", tarfile.LNKTYPE)),
        "link",
    ),
]


@pytest.mark.parametrize(
    ("name", "data", "fragment"), [a[1:] for a in ARCHIVES], ids=[a[0] for a in ARCHIVES]
)
def test_hostile_archive_is_refused(tmp_path, name, data, fragment):
    archive = tmp_path / name
    archive.write_bytes(data)
    args = ["download", "--params", "params.yaml", "--out", tmp_path / "raw"]
    args += ["-S", f"data.corpus={archive}#corpus.txt"]
    expect_bad_input(cli(args, tmp_path), name, fragment)
    assert not (tmp_path / "raw").exists() and leftovers(tmp_path) == []
    assert not (tmp_path.parent / "evil.txt").exists()


def test_a_good_download_still_works(tmp_path, monkeypatch):
    monkeypatch.delenv("GPTPIPE_MIRROR", raising=False)
    instruct, classify = tmp_path / "instruct.json", tmp_path / "classify.tsv"
    instruct.write_text(json.dumps([{"instruction": "Say hi.", "input": "", "output": "Hi!"}]))
    classify.write_text("pos\tlovely\nneg\tawful\npos\tfine\n")
    with serve({"/good": Reply(BODY, content_type="text/plain")}) as server:
        args = ["download", "--params", "params.yaml", "--out", tmp_path / "raw"]
        args += ["-S", f"data.instruct={instruct}", "-S", f"data.classify={classify}"]
        result = cli([*args, "-S", f"data.corpus={server.url('/good')}"], tmp_path)
    assert result.exit_code == 0, result.stderr
    provenance = json.loads((tmp_path / "raw" / "provenance.json").read_text())
    assert provenance["corpus"]["source"].endswith("/good")
