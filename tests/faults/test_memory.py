"""Memory stays bounded on inputs that are large in an unusual way: one long document with
no `<|endoftext|>` (the tokenizer counts it in pieces, same counts) and a large `.json`
corpus (read as a stream of list items). Peaks measured with tracemalloc at a modest size."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gptpipe.sources.formats import write_corpus
from gptpipe.tokenizer.bpe import count_pretokens
from gptpipe.tokenizer.folder import PATTERNS
from gptpipe.tokens.corpus import iter_documents, iter_texts

MB = 1 << 20


def peak(fn: Callable[[], Any]) -> tuple[Any, int]:
    """fn's result and the peak of Python allocations while it ran (bytes)."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _one_document(path: Path, size: int) -> Path:
    words = ["the", "cat", "sees", "fish", "my", "friend", "likes", "tea", "über", "naïve", "42"]
    line = " ".join(words[(i * 7) % len(words)] for i in range(60)) + ".\n"
    with path.open("w", encoding="utf-8") as fh:
        written = 0
        while written < size:
            fh.write(line)
            written += len(line.encode())
    return path


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_counting_pieces_gives_the_counts_of_whole_documents(tmp_path, pattern):
    corpus = tmp_path / "c.txt"
    corpus.write_text(
        "Doc one: it's a cat.\n\nLine two\r\nwith CRLF  and  spaces \n<|endoftext|>\n"
        "naïve café 123456 things!!\n\n\n   indented\n<|endoftext|>\r\n"
        + "words and more words, said the 3 cats.\nNext line\n"
        * 50,
        encoding="utf-8",
    )
    whole = count_pretokens(iter_documents(corpus), PATTERNS[pattern])
    for block in (7, 64, 1000):
        assert count_pretokens(iter_texts(corpus, block_bytes=block), PATTERNS[pattern]) == whole


def _drain(texts) -> int:
    longest = 0
    for text in texts:
        longest = max(longest, len(text))
    return longest


def test_one_long_document_is_read_for_counting_in_bounded_memory(tmp_path):
    """The counter's input holds a few blocks however long the document; counting itself
    works on ~1 MB tasks (`TASK_CHARS`), so its memory does not grow with the file either."""
    corpus = _one_document(tmp_path / "one.txt", 6 * MB)
    longest, pieces_peak = peak(lambda: _drain(iter_texts(corpus, 256 << 10)))
    whole, whole_peak = peak(lambda: _drain(iter_documents(corpus)))
    assert whole > 5 * MB and whole_peak > 6 * MB  # the document held whole
    assert longest <= 2 * (256 << 10) and pieces_peak < 2 * MB, pieces_peak


def test_a_large_json_corpus_is_streamed(tmp_path):
    source = tmp_path / "big.json"
    docs = [f"Document {i}: " + "some words in a row. " * 40 for i in range(7000)]
    source.write_text(json.dumps(docs), encoding="utf-8")
    assert source.stat().st_size > 5 * MB
    counts, used = peak(
        lambda: write_corpus(source, "big.json", tmp_path / "corpus.txt", block_bytes=64 << 10)
    )
    assert counts["documents"] == 7000
    assert used < 2 * MB, used  # json.loads of the whole file: several times its size
    text = (tmp_path / "corpus.txt").read_text(encoding="utf-8")
    assert text.count("<|endoftext|>") == 6999 and docs[-1].strip() in text
