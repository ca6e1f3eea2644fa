"""The `download` stage: named sets from the mirror or their URLs, the stdlib default, mirror
lists, archive members, bad input."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import shutil
import socket
import tarfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import said
from helpers.http import serve_folder
from helpers.mirror import MIRROR
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.config import DataConfig
from gptpipe.errors import BadInput
from gptpipe.sources.datasets import NAMED_SETS
from gptpipe.stages import download
from gptpipe.tokenizer.special import EOT

runner = CliRunner()


needs_mirror = pytest.mark.skipif(
    not (MIRROR / "SMSSpamCollection").is_file(), reason=f"no data mirror at {MIRROR}"
)
NO_MIRROR_ENV = {"GPTPIPE_MIRROR": None}

GOOD_CORPUS = "First document.\n\nSecond paragraph.\n"
GOOD_INSTRUCT = [{"instruction": "Say hi.", "input": "", "output": "Hi!"}]
GOOD_CLASSIFY = "pos\tlovely\nneg\tawful\tawful\npos\tfine\n"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def invoke(args: list[str], env: dict[str, str | None] | None = None):
    return runner.invoke(app, ["download", *args], env=env if env is not None else NO_MIRROR_ENV)


@pytest.fixture
def small(tmp_path, monkeypatch) -> dict[str, Path]:
    """Small good source files, and the working directory set to an empty folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GPTPIPE_MIRROR", raising=False)
    files = {
        "corpus": tmp_path / "in" / "corpus.txt",
        "instruct": tmp_path / "in" / "instruct.json",
        "classify": tmp_path / "in" / "classify.tsv",
    }
    files["corpus"].parent.mkdir()
    files["corpus"].write_text(GOOD_CORPUS)
    files["instruct"].write_text(json.dumps(GOOD_INSTRUCT))
    files["classify"].write_text(GOOD_CLASSIFY)
    return files


def sets(files: dict[str, Path], **changes: str) -> list[str]:
    """-S options taking every source from `files`, except the ones changed."""
    values = {kind: str(path) for kind, path in files.items()} | changes
    return [arg for kind, value in values.items() for arg in ("-S", f"data.{kind}={value}")]


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1, and its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    with serve_folder(root) as server:
        yield root, server.base


# --------------------------------------------------------------------------- named sets


@needs_mirror
def test_all_three_named_sets_from_the_mirror(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--out", "raw", "-S", "data.corpus=tinyshakespeare"]
    args += ["-S", "data.instruct=alpaca-instructions", "-S", "data.classify=sms-spam"]
    result = invoke(args, env={"GPTPIPE_MIRROR": str(MIRROR)})
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # summaries and progress go to stderr; stdout is for results
    raw = tmp_path / "raw"
    assert sorted(p.name for p in raw.iterdir()) == [
        "classify.tsv",
        "corpus.txt",
        "instruct.json",
        "provenance.json",
    ]
    # Tiny Shakespeare is one document, written as it came.
    assert (raw / "corpus.txt").read_bytes() == (MIRROR / "tinyshakespeare.txt").read_bytes()
    records = json.loads((raw / "instruct.json").read_text())
    assert records == json.loads((MIRROR / "instruction-data.json").read_text())
    assert len(records) == 1100
    lines = (raw / "classify.tsv").read_text().splitlines()
    assert len(lines) == 5574 and all(line.count("\t") == 1 for line in lines)
    assert Counter(line.split("\t")[0] for line in lines) == {"ham": 4827, "spam": 747}

    provenance = json.loads((raw / "provenance.json").read_text())
    for kind, name in [
        ("corpus", "tinyshakespeare"),
        ("instruct", "alpaca-instructions"),
        ("classify", "sms-spam"),
    ]:
        entry = provenance[kind]
        named = NAMED_SETS[name]
        assert entry["source"] == name and entry["type"] == "named"
        assert entry["location"] == str((MIRROR / named.file_name).resolve())
        assert entry["license"] == named.license
        assert entry["upstream"]["sha256"] == named.sha256 == sha256(MIRROR / named.file_name)
        assert entry["upstream"]["bytes"] == (MIRROR / named.file_name).stat().st_size
        output = raw / entry["output"]["file"]
        assert entry["output"] == {
            "file": output.name,
            "sha256": sha256(output),
            "bytes": output.stat().st_size,
        }
    assert provenance["classify"]["counts"] == {"lines": 5574, "labels": {"ham": 4827, "spam": 747}}
    assert provenance["instruct"]["counts"] == {"records": 1100}
    assert provenance["corpus"]["counts"]["documents"] == 1


@needs_mirror
def test_named_sets_come_from_their_urls_when_the_mirror_lacks_them(tmp_path, served, small):
    root, base = served
    shutil.copy(MIRROR / "tinyshakespeare.txt", root / "input.txt")
    with zipfile.ZipFile(root / "sms.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(MIRROR / "SMSSpamCollection", "SMSSpamCollection")
        zf.writestr("readme", "UCI")
    table = dict(NAMED_SETS)
    table["tinyshakespeare"] = dataclasses.replace(
        table["tinyshakespeare"], urls=(f"{base}/input.txt",)
    )
    table["sms-spam"] = dataclasses.replace(table["sms-spam"], urls=(f"{base}/sms.zip",))
    empty_mirror = tmp_path / "empty-mirror"
    empty_mirror.mkdir()
    cfg = DataConfig(
        corpus="tinyshakespeare",
        instruct=str(small["instruct"]),
        classify="sms-spam",
        mirror=str(empty_mirror),
    )
    provenance = download.run(cfg, tmp_path / "raw", named=table, backoff=0)
    assert provenance["corpus"]["location"] == f"{base}/input.txt"
    assert provenance["corpus"]["upstream"]["sha256"] == NAMED_SETS["tinyshakespeare"].sha256
    classify = provenance["classify"]
    assert classify["location"] == f"{base}/sms.zip#SMSSpamCollection"
    assert classify["upstream"]["sha256"] == NAMED_SETS["sms-spam"].sha256
    assert classify["upstream"]["archive"]["sha256"] == sha256(root / "sms.zip")
    assert classify["counts"]["labels"] == {"ham": 4827, "spam": 747}
    assert provenance["instruct"]["type"] == "path"
    # Downloads are scratch: only the four outputs are left.
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [
        "classify.tsv",
        "corpus.txt",
        "instruct.json",
        "provenance.json",
    ]


def test_a_named_set_with_a_wrong_hash_at_its_url_is_bad_input(tmp_path, served, small):
    root, base = served
    (root / "input.txt").write_text("Not Shakespeare at all.\n")
    table = dict(NAMED_SETS)
    table["tinyshakespeare"] = dataclasses.replace(
        table["tinyshakespeare"], urls=(f"{base}/input.txt",)
    )
    cfg = DataConfig(
        corpus="tinyshakespeare", instruct=str(small["instruct"]), classify=str(small["classify"])
    )
    with pytest.raises(BadInput, match=rf"{base}/input\.txt: sha256 mismatch"):
        download.run(cfg, tmp_path / "raw", named=table, backoff=0)
    assert not (tmp_path / "raw").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_tampered_file_in_the_mirror_is_bad_input_naming_it(tmp_path, small):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "tinyshakespeare.txt").write_text("First Citizen:\nTampered.\n")
    result = invoke(
        ["--out", "raw", *sets(small, corpus="tinyshakespeare")], {"GPTPIPE_MIRROR": str(mirror)}
    )
    assert result.exit_code == 2
    assert "mirror/tinyshakespeare.txt: sha256 mismatch" in result.stderr
    assert not (tmp_path / "raw").exists()


# --------------------------------------------------------------------------- the offline default


def test_default_is_the_offline_stdlib_build(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(["--out", "data/raw", "--details", "reports/runs/download.json"])
    assert result.exit_code == 0, result.output
    raw = tmp_path / "data" / "raw"
    run = json.loads((tmp_path / "reports" / "runs" / "download.json").read_text())
    files = ("corpus.txt", "instruct.json", "classify.tsv")
    assert run["bytes"] == sum((raw / name).stat().st_size for name in files)
    assert 0 < run["wall_seconds"] < 600
    corpus = (raw / "corpus.txt").read_text()
    docs = corpus.removesuffix("\n").split(f"\n{EOT}\n")
    assert len(docs) > 300 and all(EOT not in d and d.strip() for d in docs)
    records = json.loads((raw / "instruct.json").read_text())
    assert 1000 <= len(records) <= 3000
    assert all(set(r) == {"instruction", "input", "output"} for r in records)
    labels = Counter(
        line.split("\t")[0] for line in (raw / "classify.tsv").read_text().splitlines()
    )
    assert set(labels) == {"text", "data", "network", "system", "concurrency"}
    provenance = json.loads((raw / "provenance.json").read_text())
    for kind in ("corpus", "instruct", "classify"):
        assert provenance[kind]["source"] == "stdlib" and "PSF" in provenance[kind]["license"]
        assert provenance[kind]["output"]["sha256"] == sha256(
            raw / provenance[kind]["output"]["file"]
        )
    assert provenance["corpus"]["counts"]["documents"] == len(docs)
    assert provenance["classify"]["counts"]["labels"] == dict(sorted(labels.items()))


# --------------------------------------------------------------------------- URLs and paths


def test_any_url_file_url_or_path_works_with_its_format_guessed(tmp_path, served, small):
    root, base = served
    (root / "books.txt").write_text(f"Book one.\n{EOT}\nBook two.\n")
    jsonl = tmp_path / "in" / "tasks.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in GOOD_INSTRUCT * 2) + "\n")
    csv_file = tmp_path / "in" / "labels.csv"
    csv_file.write_text('label,text\nyes,"sure, fine"\nno,nope\n')
    args = ["--out", "raw", "-S", f"data.corpus={base}/books.txt"]
    args += ["-S", f"data.instruct={jsonl.as_uri()}", "-S", f"data.classify={csv_file}"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    raw = tmp_path / "raw"
    assert (raw / "corpus.txt").read_text() == f"Book one.\n{EOT}\nBook two.\n"
    assert json.loads((raw / "instruct.json").read_text()) == GOOD_INSTRUCT * 2
    assert (raw / "classify.tsv").read_text() == "yes\tsure, fine\nno\tnope\n"
    provenance = json.loads((raw / "provenance.json").read_text())
    assert [provenance[k]["type"] for k in ("corpus", "instruct", "classify")] == [
        "url",
        "file",
        "path",
    ]
    assert provenance["corpus"]["location"] == f"{base}/books.txt"
    assert provenance["corpus"]["upstream"]["sha256"] == sha256(root / "books.txt")
    assert provenance["instruct"]["upstream"] == {
        "sha256": sha256(jsonl),
        "bytes": jsonl.stat().st_size,
    }
    assert provenance["classify"]["location"] == str(csv_file.resolve())
    assert provenance["classify"]["license"].startswith("unknown")


def test_json_lines_and_json_corpora_over_http(tmp_path, served, small):
    """A corpus dump in JSON Lines (gzipped, as dumps come) or JSON, picked by file name."""
    root, base = served
    lines = [{"text": "Doc one.\r\nLine two.", "id": 1}, {"text": "Doc two."}, "Doc three."]
    (root / "dump.jsonl.gz").write_bytes(gzip.compress("\n".join(map(json.dumps, lines)).encode()))
    (root / "docs.json").write_text(json.dumps(lines))
    expected = f"Doc one.\nLine two.\n{EOT}\nDoc two.\n{EOT}\nDoc three.\n"
    for source in (f"{base}/dump.jsonl.gz", f"{base}/docs.json"):
        result = invoke(["--out", "raw", *sets(small, corpus=source)])
        assert result.exit_code == 0, result.output
        assert (tmp_path / "raw" / "corpus.txt").read_text() == expected
        provenance = json.loads((tmp_path / "raw" / "provenance.json").read_text())
        assert provenance["corpus"]["counts"] == {"documents": 3, "characters": 36}
        assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [
            "classify.tsv",
            "corpus.txt",
            "instruct.json",
            "provenance.json",
        ]  # no download left inside the output


def test_a_decompression_bomb_is_bad_input_naming_the_limit(tmp_path, served, small):
    root, base = served
    (root / "bomb.tsv.gz").write_bytes(gzip.compress(b"spam\tbuy\n" * 300_000))  # 3 MB
    source = f"{base}/bomb.tsv.gz"
    result = invoke(["--out", "raw", *sets(small, classify=source), "-S", "data.max_bytes=1000000"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [
        f"gptpipe: error: {source}#bomb.tsv: unpacks to more than the size limit of 1000000 "
        "bytes (data.max_bytes)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "www"]  # nothing written


def test_a_list_of_mirrors_is_tried_in_order(tmp_path, served, small):
    root, base = served
    (root / "books.txt").write_text(GOOD_CORPUS)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{sock.getsockname()[1]}/books.txt"
    mirrors = [refused, f"{base}/gone/books.txt", f"{base}/books.txt"]
    args = ["--out", "raw", *sets(small, corpus=f"[{', '.join(mirrors)}]"), "-S", "data.retries=1"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "raw" / "corpus.txt").read_text() == GOOD_CORPUS
    corpus = json.loads((tmp_path / "raw" / "provenance.json").read_text())["corpus"]
    assert corpus["source"] == mirrors and corpus["type"] == "mirrors"
    assert corpus["location"] == mirrors[2]
    # A list of one is the same as the source alone.
    cfg = DataConfig(
        corpus=[str(small["corpus"])],
        instruct=str(small["instruct"]),
        classify=str(small["classify"]),
    )
    provenance = download.run(cfg, tmp_path / "raw1")
    assert provenance["corpus"]["source"] == str(small["corpus"])
    assert provenance["corpus"]["type"] == "path"


def test_members_of_zip_tar_gz_and_gz_archives(tmp_path, served, small):
    root, base = served
    (root / "books.txt.gz").write_bytes(gzip.compress(f"Book one.\n{EOT}\nBook two.\n".encode()))
    with zipfile.ZipFile(root / "labels.zip", "w") as zf:
        zf.writestr("data/labels.csv", 'label,text\nyes,"sure, fine"\nno,nope\n')
        zf.writestr("data/README", "labels")
    jsonl = "\n".join(json.dumps(r) for r in GOOD_INSTRUCT * 3).encode()
    with tarfile.open(tmp_path / "in" / "tasks.tgz", "w:gz") as tf:
        info = tarfile.TarInfo("release/tasks.jsonl")
        info.size = len(jsonl)
        tf.addfile(info, io.BytesIO(jsonl))
    args = ["--out", "raw", "-S", f"data.corpus={base}/books.txt.gz"]
    args += ["-S", f"data.instruct={tmp_path / 'in' / 'tasks.tgz'}#tasks.jsonl"]
    args += ["-S", f"data.classify={base}/labels.zip#data/labels.csv"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    raw = tmp_path / "raw"
    assert (raw / "corpus.txt").read_text() == f"Book one.\n{EOT}\nBook two.\n"
    assert json.loads((raw / "instruct.json").read_text()) == GOOD_INSTRUCT * 3
    assert (raw / "classify.tsv").read_text() == "yes\tsure, fine\nno\tnope\n"
    provenance = json.loads((raw / "provenance.json").read_text())
    assert provenance["corpus"]["location"] == f"{base}/books.txt.gz#books.txt"
    assert provenance["classify"]["location"] == f"{base}/labels.zip#data/labels.csv"
    assert provenance["classify"]["upstream"]["archive"]["sha256"] == sha256(root / "labels.zip")
    instruct = provenance["instruct"]
    assert instruct["location"].endswith("tasks.tgz#release/tasks.jsonl")
    assert instruct["upstream"]["sha256"] == hashlib.sha256(jsonl).hexdigest()
    assert sorted(p.name for p in raw.iterdir()) == [
        "classify.tsv",
        "corpus.txt",
        "instruct.json",
        "provenance.json",
    ]


def test_rerun_gives_identical_output_and_replaces_the_folder(small, tmp_path):
    first = invoke(["--out", "raw", *sets(small)])
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in (tmp_path / "raw").iterdir()}
    (tmp_path / "raw" / "stale.txt").write_text("from an older run")
    second = invoke(["--out", "raw", *sets(small)])
    assert second.exit_code == 0, second.output
    assert {p.name: p.read_bytes() for p in (tmp_path / "raw").iterdir()} == before


def test_ends_with_one_line_naming_the_sources_and_what_it_wrote(small, tmp_path):
    """Run by hand it replaces data/raw: one line says so (the DVC log's line of the stage)."""
    result = invoke(["--out", "raw", "--details", "run.json", *sets(small)])
    assert result.exit_code == 0, result.output
    assert len(said.lines(result.stderr)) == 1, result.stderr
    summary, written = said.wrote(result.stderr, "download")
    assert written == ["raw", "run.json"]
    for kind in ("corpus", "instruct", "classify"):
        assert f"{kind} {small[kind]}" in summary


def test_under_dvc_a_local_source_outside_data_inputs_is_refused(small, tmp_path):
    """dvc.yaml makes data.inputs a dependency of download; a file elsewhere would change
    without DVC noticing (the issue's worst bug), so under DVC (DVC_STAGE set) it is bad input
    naming the key, and inside the folder, a link to a file elsewhere included, it runs."""
    under_dvc = NO_MIRROR_ENV | {"DVC_STAGE": "download"}
    result = invoke(["--out", "raw", *sets(small)], env=under_dvc)
    assert result.exit_code == 2
    assert said.lines(result.stderr) == [
        f"gptpipe: error: params key 'data.corpus': {small['corpus']} is outside data.inputs "
        "(data/inputs), the folder dvc.yaml watches for local data, so DVC would not see it "
        "change; move or link it into data/inputs, or set data.inputs to a folder that holds it"
    ]
    assert not (tmp_path / "raw").exists()
    inputs = tmp_path / "data" / "inputs"
    inputs.mkdir(parents=True)
    (inputs / "corpus.txt").symlink_to(small["corpus"])
    inside = {kind: inputs / path.name for kind, path in small.items()}
    for kind in ("instruct", "classify"):
        shutil.copy(small[kind], inside[kind])
    ok = invoke(["--out", "raw", *sets(inside)], env=under_dvc)
    assert ok.exit_code == 0, ok.output
    watched = f"data.inputs={small['corpus'].parent}"
    elsewhere = invoke(["--out", "raw", "-S", watched, *sets(small)], env=under_dvc)
    assert elsewhere.exit_code == 0, elsewhere.output
    by_hand = invoke(["--out", "raw", *sets(small)])  # no DVC: nothing watches, no rule
    assert by_hand.exit_code == 0, by_hand.output


# --------------------------------------------------------------------------- bad input


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


BAD = {
    "wrong kind": (lambda d: {"corpus": "sms-spam"}, "data.corpus"),
    "unknown name": (lambda d: {"instruct": "alpaca"}, "data.instruct"),
    "bad scheme": (lambda d: {"classify": "ftp://example.org/x.tsv"}, "data.classify"),
    "missing path": (
        lambda d: {"corpus": "nowhere/corpus.txt"},
        "nowhere/corpus.txt: file not found",
    ),
    "empty corpus": (lambda d: {"corpus": write(d / "e.txt", b"\n \n")}, "e.txt: empty corpus"),
    "non-utf8": (
        lambda d: {"corpus": write(d / "l1.txt", "caf\xe9".encode("latin-1"))},
        "l1.txt: not UTF-8",
    ),
    "instruct not a list": (
        lambda d: {"instruct": write(d / "i.json", b'{"instruction": "x"}')},
        "i.json: expected a non-empty JSON list",
    ),
    "instruct missing key": (
        lambda d: {"instruct": write(d / "i.json", b'[{"instruction": "x", "output": "y"}]')},
        "i.json: record 0: missing key(s) input",
    ),
    "one label": (
        lambda d: {"classify": write(d / "c.tsv", b"a\tx\na\ty\n")},
        "c.tsv: classification data needs at least 2 labels",
    ),
    "malformed line": (
        lambda d: {"classify": write(d / "c.tsv", b"a\tx\nb y\n")},
        "c.tsv: line 2:",
    ),
    "archive traversal": (
        lambda d: {"classify": write(d / "evil.zip", zip_of("../c.tsv")) + "#c.tsv"},
        "evil.zip: refusing archive member '../c.tsv'",
    ),
    "archive lacks member": (
        lambda d: {"classify": write(d / "c.zip", zip_of("c.tsv")) + "#other.tsv"},
        "c.zip: archive has no member 'other.tsv'",
    ),
    "named set in a list": (
        lambda d: {"corpus": "[a.txt, tinyshakespeare]"},
        "'data.corpus[1]': a list holds mirrors (URLs or paths) of one file",
    ),
    "bad scheme in a list": (
        lambda d: {"corpus": "[a.txt, ftp://example.org/a.txt]"},
        "'data.corpus[1]': unsupported URL scheme 'ftp'",
    ),
    "no mirror works": (
        lambda d: {"corpus": "[nowhere/a.txt, nowhere/b.txt]"},
        "'data.corpus': none of the 2 mirrors worked: nowhere/a.txt: file not found; nowhere/b",
    ),
    "empty list": (lambda d: {"instruct": "[]"}, "'data.instruct': must not be an empty list"),
}


def zip_of(member: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(member, GOOD_CLASSIFY)
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, small, tmp_path):
    make, expected = BAD[case]
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "corpus.txt").write_text("previous output")
    (tmp_path / "raw" / "provenance.json").write_text("{}")  # what marks a previous output
    result = invoke(["--out", "raw", *sets(small, **make(tmp_path / "in"))])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    # The previous output is untouched and no temporary folder is left behind.
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["corpus.txt", "provenance.json"]
    assert (tmp_path / "raw" / "corpus.txt").read_text() == "previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "raw"]


def test_missing_mirror_folder_is_bad_input_naming_the_key(small, tmp_path):
    args = ["--out", "raw", *sets(small, corpus="tinyshakespeare"), "-S", "data.mirror=no/such"]
    result = invoke(args)
    assert result.exit_code == 2
    assert "params key 'data.mirror': no/such: mirror folder not found" in result.stderr
    result = invoke(
        ["--out", "raw", *sets(small, corpus="tinyshakespeare")], {"GPTPIPE_MIRROR": "gone"}
    )
    assert (
        result.exit_code == 2 and "GPTPIPE_MIRROR: gone: mirror folder not found" in result.stderr
    )
    # A mirror is only needed for named sets.
    assert invoke(["--out", "raw", *sets(small)], {"GPTPIPE_MIRROR": "gone"}).exit_code == 0


def test_a_404_url_is_bad_input_naming_the_url(small, served):
    _, base = served
    result = invoke(["--out", "raw", *sets(small, classify=f"{base}/missing.tsv")])
    assert result.exit_code == 2
    assert f"{base}/missing.tsv: HTTP 404" in result.stderr


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.retries=0", "data.retries"),
        ("data.timeout=0", "data.timeout"),
        ("data.max_bytes=0", "data.max_bytes"),
    ],
)
def test_bad_fetch_params_are_bad_input(small, override, key):
    result = invoke(["--out", "raw", *sets(small), "-S", override])
    assert result.exit_code == 2 and f"'{key}'" in result.stderr
