"""A corpus of many files: globs and folders in sorted order, mixed formats (Parquet, JSON
Lines, text; .gz and .zst) concatenated as documents, each file's provenance kept; .zst read
across frames, refused when cut short or past the size limit."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from helpers.faults import raises_bad_input

from gptpipe.sources.fetch import FetchOptions, ZstdReader, sha256_and_size
from gptpipe.sources.many import expand, expand_all, write_corpus_files
from gptpipe.tokenizer.special import EOT

OPTIONS = FetchOptions(timeout=5, retries=1, backoff=0)


def parquet_file(path: Path, texts: list[str | None], row_group_size: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts}), path, row_group_size=row_group_size)
    return path


def corpus(*documents: str) -> str:
    return f"\n{EOT}\n".join(documents) + "\n"


def test_a_glob_reads_its_matches_in_sorted_order(tmp_path):
    for name in ["b-10.parquet", "b-02.parquet", "a.parquet"]:
        parquet_file(tmp_path / "fw" / name, [name])
    (tmp_path / "fw" / "notes.txt").write_text("not matched")
    found = expand(str(tmp_path / "fw" / "*.parquet"), "data.corpus")
    assert [Path(p).name for p in found] == ["a.parquet", "b-02.parquet", "b-10.parquet"]


def test_a_folder_reads_every_file_below_it_sorted_skipping_hidden_names(tmp_path):
    folder = tmp_path / "set"
    for rel in ["train/1.txt", "train/0.txt", "a.jsonl", ".gitignore", ".cache/x.txt"]:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text("x")
    found = [Path(p).relative_to(folder).as_posix() for p in expand(str(folder), "data.corpus")]
    assert found == ["a.jsonl", "train/0.txt", "train/1.txt"]


def test_a_glob_matching_nothing_and_an_empty_folder_are_bad_input(tmp_path):
    raises_bad_input(
        lambda: expand(str(tmp_path / "*.parquet"), "data.corpus"),
        "params key 'data.corpus'",
        "*.parquet: no files match",
    )
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    raises_bad_input(
        lambda: expand(str(tmp_path / "empty"), "data.corpus"),
        "empty: folder holds no files",
    )


def test_a_file_whose_name_holds_glob_characters_is_that_file(tmp_path):
    odd = tmp_path / "part[1].txt"
    odd.write_text("odd")
    assert expand(str(odd), "data.corpus") == [str(odd)]


def test_mixed_formats_are_concatenated_in_order_with_each_files_provenance(tmp_path):
    folder = tmp_path / "mixed"
    parquet_file(folder / "1.parquet", ["p one", None, "p two", "p three"])
    jsonl = b"".join(json.dumps({"text": t}).encode() + b"\n" for t in ["j one", "j two"])
    (folder / "2.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl))
    (folder / "3.txt.gz").write_bytes(gzip.compress(f"t one\n{EOT}\nt two\n".encode()))
    (folder / "4.txt").write_text("a whole file\nis one document\n")
    dest = tmp_path / "raw" / "corpus.txt"
    files = expand_all([str(folder)], "data.corpus")
    entries, counts = write_corpus_files(files, tmp_path / "work", dest, OPTIONS)
    assert dest.read_text() == corpus(
        "p one", "p two", "p three", "j one", "j two", "t one", "t two",
        "a whole file\nis one document",
    )  # fmt: skip
    assert counts["documents"] == 8 and counts["files"] == 4 and counts["null_rows"] == 1
    assert [e["documents"] for e in entries] == [3, 2, 2, 1]
    assert entries[0] | {"sha256": "", "location": ""} == {
        "location": "",
        "sha256": "",
        "bytes": (folder / "1.parquet").stat().st_size,
        "documents": 3,
        "rows": 4,
        "null_rows": 1,
    }
    assert entries[0]["sha256"] == sha256_and_size(folder / "1.parquet")[0]
    # A compressed file: its archive's hash and size, and those of what it holds.
    assert entries[1]["archive"]["sha256"] == sha256_and_size(folder / "2.jsonl.zst")[0]
    assert entries[1]["location"].endswith("2.jsonl.zst#2.jsonl")
    assert entries[1]["bytes"] == len(jsonl)
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").rglob("*"))


def test_a_bad_file_after_good_ones_leaves_nothing_at_the_destination(tmp_path):
    parquet_file(tmp_path / "in" / "1.parquet", ["fine"])
    (tmp_path / "in" / "2.parquet").write_bytes(b"not parquet at all")
    dest = tmp_path / "raw" / "corpus.txt"
    files = expand_all([str(tmp_path / "in" / "*.parquet")], "data.corpus")
    raises_bad_input(
        lambda: write_corpus_files(files, tmp_path / "work", dest, OPTIONS),
        "2.parquet: not a Parquet file",
    )
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_files_that_hold_no_text_are_an_empty_corpus(tmp_path):
    parquet_file(tmp_path / "in" / "1.parquet", [None, None])
    parquet_file(tmp_path / "in" / "2.parquet", ["  \n", None])
    files = expand_all([str(tmp_path / "in")], "data.corpus")
    raises_bad_input(
        lambda: write_corpus_files(files, tmp_path / "w", tmp_path / "c.txt", OPTIONS),
        "params key 'data.corpus': empty corpus (no text in 2 files)",
    )


# --------------------------------------------------------------------------- zstd


def test_zstd_is_read_across_frames(tmp_path):
    """pzstd and friends write several frames; python-zstandard's readers stop at the first."""
    frames = [zstandard.ZstdCompressor().compress(b"frame %d\n" % i * 1000) for i in range(3)]
    path = tmp_path / "multi.txt.zst"
    path.write_bytes(b"".join(frames))
    with ZstdReader(path) as reader:
        assert reader.read() == b"".join(b"frame %d\n" % i * 1000 for i in range(3))


def test_zstd_cut_short_is_bad_input_naming_the_file(tmp_path):
    data = zstandard.ZstdCompressor().compress(b"a line of text\n" * 100_000)
    path = tmp_path / "cut.txt.zst"
    path.write_bytes(data[: len(data) // 2])
    raises_bad_input(
        lambda: write_corpus_files([("data.corpus", str(path))], tmp_path / "w",
                                   tmp_path / "c.txt", OPTIONS),
        "cut.txt.zst",
        "corrupt or truncated zstd",
    )  # fmt: skip
    assert not (tmp_path / "c.txt").exists()


def test_a_zstd_bomb_stops_at_max_bytes_without_filling_memory(tmp_path):
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\0" * (64 << 20))
    path = tmp_path / "bomb.txt.zst"
    path.write_bytes(bomb)
    assert len(bomb) < 10_000
    options = FetchOptions(timeout=5, retries=1, max_bytes=1 << 20, backoff=0)
    raises_bad_input(
        lambda: write_corpus_files([("data.corpus", str(path))], tmp_path / "w",
                                   tmp_path / "c.txt", options),
        "bomb.txt.zst",
        "unpacks to more than the size limit of 1048576 bytes (data.max_bytes)",
    )  # fmt: skip
    assert not (tmp_path / "c.txt").exists() and not any((tmp_path / "w").rglob("*"))


@pytest.mark.parametrize("size", [1, 1023, 1024, 1025, 200_000])
def test_zstd_reads_whole_whatever_the_piece_boundaries(tmp_path, size):
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    path = tmp_path / "d.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(data) * 2)
    with ZstdReader(path) as reader:
        got = b"".join(iter(lambda: reader.read(777), b""))
    assert got == data * 2
