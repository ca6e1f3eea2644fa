"""The tokenizer's corpus sample: bounded, spread over the file, deterministic, and the whole
corpus when it is small."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import regex

from gptpipe.errors import BadInput
from gptpipe.tokenizer.folder import PATTERNS
from gptpipe.tokens.corpus import iter_texts
from gptpipe.tokens.sample import SampleStats, sample_texts

SEPARATOR = "\n<|endoftext|>\n"
WORDS = [
    "the",
    "of",
    "and",
    "a",
    "to",
    "in",
    "is",
    "was",
    "he",
    "for",
    "it",
    "with",
    "as",
    "his",
    "on",
    "be",
    "at",
    "by",
    "had",
    "are",
    "but",
    "from",
]


def write_documents(path: Path, n: int, seed: int = 0) -> list[str]:
    """Documents of varied length, each naming its index ("doc 17: ...")."""
    rng = np.random.default_rng(seed)
    docs = [
        f"doc {i}: " + " ".join(rng.choice(WORDS, int(rng.integers(20, 400)))) + "."
        for i in range(n)
    ]
    path.write_text(SEPARATOR.join(docs) + "\n")
    return docs


def read_chars() -> int | None:
    """Bytes this process has read through read() so far (Linux), None elsewhere."""
    io = Path("/proc/self/io")
    if not io.is_file():
        return None
    return int(re.search(r"rchar: (\d+)", io.read_text()).group(1))


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, list[str]]:
    path = tmp_path_factory.mktemp("sample") / "corpus.txt"
    docs = write_documents(path, 9000)
    return path, docs


def test_a_corpus_no_larger_than_the_sample_is_read_whole(tmp_path):
    path = tmp_path / "corpus.txt"
    write_documents(path, 50)
    whole = list(iter_texts(path))
    size = path.stat().st_size
    for sample_bytes in (0, size, size + 1, 10**9):
        stats = SampleStats()
        assert list(sample_texts(path, sample_bytes, stats)) == whole
        assert stats.windows == 0 and stats.sampled_bytes == stats.corpus_bytes == size


def test_a_corpus_ten_times_the_sample_yields_the_sample_and_reads_little_more(big):
    path, docs = big
    size = path.stat().st_size
    sample_bytes = size // 10
    stats = SampleStats()
    before = read_chars()
    texts = list(sample_texts(path, sample_bytes, stats, window_bytes=16 << 10))
    after = read_chars()
    kept = sum(len(t.encode()) for t in texts)
    assert 0.9 * sample_bytes < stats.sampled_bytes <= sample_bytes
    assert kept <= stats.sampled_bytes
    assert stats.read_bytes <= 2 * sample_bytes + 64 * stats.windows
    if before is not None and after is not None:  # what the OS says this process read
        assert after - before <= 2.2 * sample_bytes
    # whole documents, no more than once each, from every tenth of the file
    known = {d: i for i, d in enumerate(docs)}
    indices = [known[t] for t in texts]
    assert len(set(indices)) == len(indices) == len(texts)
    assert indices == sorted(indices)
    assert {i * 10 // len(docs) for i in indices} == set(range(10))


def test_the_same_corpus_gives_the_same_sample_and_another_size_another(big):
    path, _ = big
    size = path.stat().st_size
    first = list(sample_texts(path, size // 10, window_bytes=16 << 10))
    assert list(sample_texts(path, size // 10, window_bytes=16 << 10)) == first
    assert list(sample_texts(path, size // 5, window_bytes=16 << 10)) != first


def test_one_long_document_is_cut_only_at_pre_token_boundaries(tmp_path):
    rng = np.random.default_rng(1)
    words = [f"w{rng.integers(0, 99)}x" if i % 7 else "naïve\nLine" for i in range(200_000)]
    text = " ".join(words)  # one document, no separators, ~1.5 MB
    path = tmp_path / "long.txt"
    path.write_text(text)
    stats = SampleStats()
    pieces = list(sample_texts(path, 100_000, stats, window_bytes=10_000))
    assert stats.windows == 10 and 90_000 < stats.sampled_bytes <= 100_000
    pattern = regex.compile(PATTERNS["gpt2"])
    whole = pattern.findall(text)
    for piece in pieces:
        at = text.index(piece)
        # the piece's pre-tokens are a run of the whole text's pre-tokens
        inside = pattern.findall(piece)
        before = len(pattern.findall(text[:at]))
        assert whole[before : before + len(inside)] == inside


def test_text_without_safe_cuts_is_cut_between_characters(tmp_path):
    path = tmp_path / "cjk.txt"
    path.write_text("漢字かな交じり文" * 50_000)  # no ASCII at all: no safe cut
    pieces = list(sample_texts(path, 30_000, window_bytes=3_000))
    assert len(pieces) == 10 and all(p and set(p) <= set("漢字かな交じり文") for p in pieces)


def test_bytes_that_are_not_utf8_in_the_sample_name_the_file_and_offset(tmp_path):
    path = tmp_path / "corpus.txt"
    data = bytearray(("word " * 100_000).encode())
    data[250_012] = 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        BadInput, match=r"corpus.txt: not UTF-8 text \(invalid byte at offset 250012\)"
    ):
        list(sample_texts(path, 100_000, window_bytes=10_000))
    with pytest.raises(BadInput, match="corpus file not found"):
        list(sample_texts(tmp_path / "missing.txt", 100))
