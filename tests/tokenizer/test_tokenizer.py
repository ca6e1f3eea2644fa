"""Tokenizer folders: GPT-2's packaged ranks, save/load of trained ranks, corpus documents."""

import hashlib
import json

import pytest
from helpers.mirror import MIRROR, needs_mirror

from gptpipe.errors import BadInput
from gptpipe.tokenizer.folder import (
    eot_id,
    gpt2_ranks_path,
    load_tokenizer,
    save_gpt2,
    save_tokenizer,
    special_token_ids,
    tokenizer_hash,
)
from gptpipe.tokenizer.special import EOT
from gptpipe.tokens.corpus import iter_documents

RANKS = {bytes([b]): b for b in range(256)} | {b"ab": 256, b"abc": 257}


@needs_mirror
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


def test_extra_special_tokens_follow_eot_and_round_trip(tmp_path):
    extra = ["<|im_start|>", "<|im_end|>", "<|pad|>"]
    save_tokenizer(tmp_path / "tok", RANKS, "bpe", "gpt2", special_tokens=extra)
    meta = json.loads((tmp_path / "tok" / "tokenizer.json").read_text(encoding="utf-8"))
    assert list(meta["special_tokens"].items()) == [
        (EOT, 258),
        ("<|im_start|>", 259),
        ("<|im_end|>", 260),
        ("<|pad|>", 261),
    ]
    assert meta["n_vocab"] == 262
    enc = load_tokenizer(tmp_path / "tok")
    assert enc.n_vocab == 262 and eot_id(enc) == 258
    assert special_token_ids(enc) == meta["special_tokens"]
    text = "<|im_start|>abc<|im_end|>ab<|pad|><|pad|>" + EOT
    ids = enc.encode(text, allowed_special="all")
    assert ids == [259, 257, 260, 256, 261, 261, 258]
    assert enc.decode(ids) == text
    assert enc.decode([261]) == "<|pad|>"
    # Without allowed_special they are plain text, as the corpus is encoded.
    plain = enc.encode(text, allowed_special=set(), disallowed_special=())
    assert not set(plain) & {258, 259, 260, 261} and enc.decode(plain) == text
    assert enc.encode_ordinary("<|pad|>") == enc.encode("<|pad|>", disallowed_special=())


def test_special_tokens_are_deterministic_and_part_of_the_hash(tmp_path):
    for name in ("a", "b"):
        save_tokenizer(tmp_path / name, RANKS, "bpe", "gpt2", special_tokens=["<|x|>", "<|y|>"])
    save_tokenizer(tmp_path / "c", RANKS, "bpe", "gpt2", special_tokens=["<|y|>", "<|x|>"])
    save_tokenizer(tmp_path / "d", RANKS, "bpe", "gpt2")
    assert tokenizer_hash(tmp_path / "a") == tokenizer_hash(tmp_path / "b")
    assert len({tokenizer_hash(tmp_path / n) for n in "acd"}) == 3
    assert load_tokenizer(tmp_path / "c").encode("<|y|>", allowed_special="all") == [259]


@pytest.mark.parametrize(
    ("special", "message"),
    [
        ([" "], "empty or only whitespace"),
        ([EOT], "always the first special token"),
        (["<|a|>", "<|a|>"], "listed twice"),
        (["<|a|>", "<|a|>b"], "prefix"),
        (["<|end"], "prefix"),
        (["abc"], r"also a token of the vocabulary \(rank 257\)"),
    ],
)
def test_save_tokenizer_refuses_unusable_special_tokens(tmp_path, special, message):
    with pytest.raises(BadInput, match=message):
        save_tokenizer(tmp_path / "tok", RANKS, "bpe", "gpt2", special_tokens=special)
    assert not (tmp_path / "tok").exists()


def test_tokenizer_description_without_eot_is_bad_input(tmp_path):
    save_tokenizer(tmp_path / "tok", RANKS, "bpe", "gpt2", special_tokens=["<|pad|>"])
    meta_path = tmp_path / "tok" / "tokenizer.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["special_tokens"] = {"<|pad|>": 258, "<|other|>": 259}
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(BadInput, match=r"tokenizer\.json: no <\|endoftext\|> special token"):
        load_tokenizer(tmp_path / "tok")


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
