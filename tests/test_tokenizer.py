"""Tokenizer folders: GPT-2's packaged ranks, save/load of trained ranks, corpus documents."""

import hashlib

import pytest
from support import MIRROR

from gptpipe.errors import BadInput
from gptpipe.tokenizer import (
    EOT,
    eot_id,
    gpt2_ranks_path,
    iter_documents,
    load_tokenizer,
    save_gpt2,
    save_tokenizer,
    tokenizer_hash,
)


def test_packaged_gpt2_ranks_equal_the_mirror_copy():
    packaged = hashlib.sha256(gpt2_ranks_path().read_bytes()).hexdigest()
    mirror = hashlib.sha256((MIRROR / "gpt2.tiktoken").read_bytes()).hexdigest()
    assert packaged == mirror


def test_gpt2_tokenizer_encodes_like_gpt2(tmp_path):
    save_gpt2(tmp_path / "tok")
    enc = load_tokenizer(tmp_path / "tok")
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert eot_id(enc) == 50256
    assert enc.n_vocab == 50257


def test_saved_ranks_load_back_and_hash_changes_with_them(tmp_path):
    ranks = {bytes([b]): b for b in range(256)} | {b"ab": 256, b"abc": 257}
    save_tokenizer(tmp_path / "a", ranks, kind="bpe", pattern="gpt4")
    enc = load_tokenizer(tmp_path / "a")
    assert enc.encode_ordinary("abc ab") == [257, 32, 256]
    assert eot_id(enc) == 258 and enc.n_vocab == 259
    save_tokenizer(tmp_path / "b", ranks | {b"bc": 258}, kind="bpe", pattern="gpt4")
    assert tokenizer_hash(tmp_path / "a") != tokenizer_hash(tmp_path / "b")


def test_documents_split_on_separator_lines_only(tmp_path):
    corpus = tmp_path / "corpus.txt"
    docs = ["first doc\nwith two lines", "second <|endoftext|> inline stays", "", "  last\n"]
    corpus.write_text(f"\n{EOT}\n".join(docs), encoding="utf-8")
    seen: list[bytes] = []
    assert list(iter_documents(corpus, on_bytes=seen.append)) == [
        docs[0],
        docs[1],
        docs[3],
    ]  # the empty document is skipped
    assert b"".join(seen) == corpus.read_bytes()


def test_documents_with_crlf_separators(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"one\r\n<|endoftext|>\r\ntwo\r\n")
    assert list(iter_documents(corpus)) == ["one", "two\r\n"]


def test_non_utf8_corpus_names_file_and_offset(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"ok\nfine \xff!")
    with pytest.raises(BadInput, match=r"corpus\.txt: not UTF-8 text \(invalid byte at offset 8\)"):
        list(iter_documents(corpus))


def test_missing_corpus_names_file(tmp_path):
    with pytest.raises(BadInput, match=r"nope\.txt: corpus file not found"):
        list(iter_documents(tmp_path / "nope.txt"))
