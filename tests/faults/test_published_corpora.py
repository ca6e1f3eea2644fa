"""Corpora as they are published, gone wrong: Parquet that is cut short or not Parquet at
all, a column of numbers or none of the name, a glob that matches nothing, a folder with
nothing to read, a listed URL that is missing or refused, a .zst bomb. Every row: exit 2,
one line naming the file (and the row group or member where it helps), and nothing in
data/raw or beside it."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from helpers.faults import cli, expect_bad_input, leftovers
from helpers.http import serve_folder


def _parquet(path: Path, columns: dict[str, list[object]]) -> None:
    pq.write_table(pa.table(columns), path, row_group_size=2)


def truncated(root: Path) -> str:
    _parquet(root / "cut.parquet", {"text": [f"row {i}" * 20 for i in range(20)]})
    data = (root / "cut.parquet").read_bytes()
    (root / "cut.parquet").write_bytes(data[: len(data) - 100])
    return "cut.parquet"


def not_parquet(root: Path) -> str:
    (root / "fake.parquet").write_text("id,text\n1,a csv file under a Parquet name\n")
    return "fake.parquet"


def numbers(root: Path) -> str:
    _parquet(root / "numbers.parquet", {"text": [1, 2, 3]})
    return "numbers.parquet"


def no_column(root: Path) -> str:
    _parquet(root / "content.parquet", {"content": ["a", "b"]})
    return "content.parquet"


def second_of_a_glob(root: Path) -> str:
    _parquet(root / "0.parquet", {"text": ["good"]})
    (root / "1.parquet").write_bytes(b"PAR1 and then nothing")
    return "*.parquet"


def glob_nothing(root: Path) -> str:
    return "nothing-*.parquet"


def hidden_only(root: Path) -> str:
    (root / "set" / ".cache").mkdir(parents=True)
    (root / "set" / ".gitignore").write_text("*\n")
    return "set"


def zstd_bomb(root: Path) -> str:
    bomb = zstandard.ZstdCompressor(level=19).compress(b"A" * (8 << 20))
    (root / "bomb.jsonl.zst").write_bytes(bomb)
    return "bomb.jsonl.zst"


# (case id, builder of the source under the input folder, fragments of the error line)
LOCAL: list[tuple[str, Callable[[Path], str], list[str]]] = [
    ("truncated-parquet", truncated, ["cut.parquet", "truncated or corrupt Parquet"]),
    ("not-parquet", not_parquet, ["fake.parquet", "not a Parquet file"]),
    ("column-of-numbers", numbers, ["numbers.parquet", "column 'text'", "int64, not strings"]),
    ("missing-column", no_column, ["content.parquet", "no column 'text'", "data.text_column"]),
    ("bad-file-in-a-glob", second_of_a_glob, ["1.parquet", "Parquet"]),
    ("glob-matching-nothing", glob_nothing, ["data.corpus", "nothing-*.parquet: no files match"]),
    ("folder-with-no-files", hidden_only, ["data.corpus", "set: folder holds no files"]),
    ("zstd-bomb", zstd_bomb, ["bomb.jsonl.zst", "unpacks to more than", "data.max_bytes"]),
]


@pytest.mark.parametrize(("build", "fragments"), [c[1:] for c in LOCAL], ids=[c[0] for c in LOCAL])
def test_bad_local_corpus(tmp_path, monkeypatch, build, fragments):
    monkeypatch.delenv("GPTPIPE_MIRROR", raising=False)
    root = tmp_path / "in"
    root.mkdir()
    source = root / build(root)
    args = ["download", "--params", "params.yaml", "--out", tmp_path / "raw"]
    args += ["-S", f"data.corpus={source}", "-S", "data.max_bytes=1000000"]
    expect_bad_input(cli(args, tmp_path), *fragments)
    assert not (tmp_path / "raw").exists() and leftovers(tmp_path) == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("failure", ["not-found", "refused"])
def test_a_failing_entry_of_a_url_list(tmp_path, monkeypatch, failure):
    monkeypatch.delenv("GPTPIPE_MIRROR", raising=False)
    www = tmp_path / "www"
    www.mkdir()
    _parquet(www / "000.parquet", {"text": ["good"]})
    with serve_folder(www) as server:
        bad = (
            f"{server.base}/001.parquet"
            if failure == "not-found"
            else f"http://127.0.0.1:{_closed_port()}/001.parquet"
        )
        args = ["download", "--params", "params.yaml", "--out", tmp_path / "raw"]
        args += ["-S", f"data.corpus={{files: [{server.base}/000.parquet, {bad}]}}"]
        args += ["-S", "data.retries=2", "-S", "data.timeout=5"]
        reason = "HTTP 404" if failure == "not-found" else "connection failed"
        expect_bad_input(cli(args, tmp_path), bad, reason)
    assert not (tmp_path / "raw").exists() and leftovers(tmp_path) == []
