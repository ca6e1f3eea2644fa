"""Byte-level BPE training: tiktoken encodes with the learned ranks exactly as the trainer did."""

import sysconfig
import time
from pathlib import Path

import pytest
import regex
from helpers.mirror import MIRROR, needs_mirror

from gptpipe.errors import BadInput
from gptpipe.tokenizer.bpe import NUM_BYTES, _safe_pieces, count_pretokens, train_bpe
from gptpipe.tokenizer.folder import PATTERNS, load_tokenizer, save_tokenizer
from gptpipe.tokenizer.special import EOT

VARIED = [
    "Hello world! Hello, WORLD... hello   world\n\n\tTabs\tand    spaces   ",
    "Numbers 1234567890 12 345 6789 3.14159 1,000,000 and 007 agents 2024-11-23",
    "Ünïcödé façade naïve coöperate — “quotes” ‘single’ «guillemets» ¿qué? ¡sí!",
    "日本語のテキスト、中文文本，한국어 텍스트 and Ελληνικά κείμενα και русский текст",
    "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇩🇪 ❤️ and ✨sparkles✨ 🐍🐍🐍",
    "Whitespace runs:      \n\n\n   \r\n\r\n  \t\t  \u00a0\u2003 end",
    "it's they're we've I'll you'd she'S DON'T can't o'clock",
    "aaaaaaaaaaaaaaaaaaaaaaaaaa aaa aa a bbbbbbbbbbbbbbbbbbbb abababababab",
    "def f(x):\n    return {'k': [x**2, x // 3]}  # code-like text\n",
]


def corpus_documents(repeat: int = 30) -> list[str]:
    return [f"{text} (copy {i})" for i in range(repeat) for text in VARIED]


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_tiktoken_encodes_training_text_exactly_like_the_trainer(tmp_path, pattern):
    documents = corpus_documents()
    result = train_bpe(documents, 600, PATTERNS[pattern], show_progress=False)
    save_tokenizer(tmp_path, result.ranks, kind="bpe", pattern=pattern)
    enc = load_tokenizer(tmp_path)
    assert enc.n_vocab == 600
    for document in documents:
        ids = enc.encode_ordinary(document)
        assert ids == result.encode_known(document)
        assert enc.decode(ids) == document
    for word, ids in result.words.items():
        assert enc.encode_ordinary(word) == ids or regex.findall(PATTERNS[pattern], word) != [word]


@needs_mirror
def test_tiktoken_matches_trainer_on_real_corpus(tmp_path):
    text = (MIRROR / "tinyshakespeare.txt").read_text(encoding="utf-8")[:300_000]
    result = train_bpe([text], 2000, PATTERNS["gpt2"], show_progress=False)
    save_tokenizer(tmp_path, result.ranks, kind="bpe", pattern="gpt2")
    enc = load_tokenizer(tmp_path)
    assert enc.encode_ordinary(text) == result.encode_known(text)


def test_round_trip_on_unseen_text(tmp_path):
    result = train_bpe(corpus_documents(5), 400, PATTERNS["gpt2"], show_progress=False)
    save_tokenizer(tmp_path, result.ranks, kind="bpe", pattern="gpt2")
    enc = load_tokenizer(tmp_path)
    unseen = "Zebra quux 🦓 ∑∫√ \x00\x07 control \ufeff BOM, surrogate-free 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 " * 3
    assert enc.decode(enc.encode_ordinary(unseen)) == unseen
    assert enc.decode(enc.encode(unseen + EOT, allowed_special="all")) == unseen + EOT
    assert enc.encode(EOT, allowed_special="all") == [enc.n_vocab - 1]


def test_ranks_are_bytes_then_merges_of_earlier_tokens():
    result = train_bpe(corpus_documents(5), 600, PATTERNS["gpt2"], show_progress=False)
    ranks = result.ranks
    assert len(ranks) == 599 and result.num_merges == 599 - NUM_BYTES
    assert sorted(ranks.values()) == list(range(599))
    for b in range(NUM_BYTES):
        assert ranks[bytes([b])] == b
    for token, rank in ranks.items():
        if rank >= NUM_BYTES:
            assert any(
                ranks.get(token[:cut], rank) < rank and ranks.get(token[cut:], rank) < rank
                for cut in range(1, len(token))
            ), token


def test_training_is_deterministic_and_ties_go_to_smallest_bytes():
    documents = corpus_documents(5)
    first = train_bpe(documents, 500, PATTERNS["gpt2"], show_progress=False)
    second = train_bpe(list(reversed(documents)), 500, PATTERNS["gpt2"], show_progress=False)
    assert list(first.ranks.items()) == list(second.ranks.items())
    # "ab" and "cd" occur equally often: the smaller bytes win the tie, then the other one.
    tie = train_bpe(["cd", "ab"] * 3, 259, PATTERNS["gpt2"], show_progress=False)
    assert [t for t, r in sorted(tie.ranks.items(), key=lambda kv: kv[1])][256:] == [
        b"ab",
        b"cd",
    ]


def test_most_frequent_pair_is_merged_first_and_documents_are_not_joined():
    result = train_bpe(["xy xy xy zw", "q", "q"], 259, PATTERNS["gpt2"], show_progress=False)
    by_rank = sorted(result.ranks, key=result.ranks.get)
    assert by_rank[256:] == [b"xy", b" xy"]  # xy: 3 times; then " " + xy: twice
    counts = count_pretokens(["ab", "cd"], PATTERNS["gpt2"])
    assert counts == {"ab": 1, "cd": 1}  # never "abcd": documents are split separately


def test_repeated_characters_merge_left_to_right_like_tiktoken(tmp_path):
    documents = ["a" * n for n in range(1, 40)] + ["ab" * n for n in range(1, 20)]
    result = train_bpe(documents, 280, PATTERNS["gpt2"], show_progress=False)
    save_tokenizer(tmp_path, result.ranks, kind="bpe", pattern="gpt2")
    enc = load_tokenizer(tmp_path)
    for document in documents:
        assert enc.encode_ordinary(document) == result.encode_known(document), document


def test_vocab_larger_than_the_corpus_supports_names_the_key_and_the_maximum():
    with pytest.raises(BadInput, match=r"tokenizer\.vocab_size.*maximum vocab_size 259"):
        # "abab": merge ab, then (ab, ab) -> abab; then no pair is left: 2 merges at most.
        train_bpe(["abab"], 300, PATTERNS["gpt2"], show_progress=False)


def test_trains_4096_on_3mb_in_well_under_a_minute():
    root = Path(sysconfig.get_paths()["stdlib"])
    documents, size = [], 0
    for path in sorted(root.rglob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        documents.append(text)
        size += len(text.encode("utf-8"))
        if size > 3_000_000:
            break
    assert size > 3_000_000
    started = time.perf_counter()
    result = train_bpe(documents, 4096, PATTERNS["gpt2"], show_progress=False)
    seconds = time.perf_counter() - started
    assert len(result.ranks) == 4095
    assert seconds < 30, f"BPE training took {seconds:.1f} s"


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_safe_cuts_never_change_the_pretokens(pattern):
    text = "\n".join(VARIED * 4) + "\nend.\nA\n\nB \nC\n x\ny!\nz"
    compiled = regex.compile(PATTERNS[pattern])
    for size in (1, 7, 50, 300):
        pieces = list(_safe_pieces(text, size))
        assert "".join(pieces) == text
        assert len(pieces) > 1
        assert [t for p in pieces for t in compiled.findall(p)] == compiled.findall(text)


def test_worker_count_does_not_change_counts_or_vocabulary(monkeypatch):
    import gptpipe.tokenizer.bpe as bpe

    monkeypatch.setattr(bpe, "TASK_CHARS", 500)  # many tasks, long documents cut in pieces
    documents = ["\n".join(corpus_documents(3)), *corpus_documents(2)]
    serial = count_pretokens(documents, PATTERNS["gpt2"], workers=1)
    assert count_pretokens(documents, PATTERNS["gpt2"], workers=2) == serial
    one = train_bpe(documents, 450, PATTERNS["gpt4"], show_progress=False, workers=1)
    two = train_bpe(iter(documents), 450, PATTERNS["gpt4"], show_progress=False, workers=2)
    assert list(one.ranks.items()) == list(two.ranks.items())


def test_bad_document_in_parallel_counting_is_bad_input_from_the_caller(tmp_path):
    from gptpipe.tokens.corpus import iter_documents

    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(("hello world\n" * 50_000).encode() + b"\xff\xfe bad\n")
    with pytest.raises(BadInput, match=r"corpus\.txt: not UTF-8 text \(invalid byte at offset"):
        train_bpe(iter_documents(corpus), 300, PATTERNS["gpt2"], show_progress=False, workers=2)


def test_ties_prefer_pairs_of_older_tokens():
    # After "ab" (3 times), "abc" = (ab, c) = ids (256, 99) and "bz" = ids (98, 122) both occur
    # twice: the pair of the older tokens wins although its bytes sort later.
    result = train_bpe(["abc", "abc", "bz", "bz", "ab"], 260, PATTERNS["gpt2"], False)
    assert sorted(result.ranks, key=result.ranks.get)[256:] == [b"ab", b"bz", b"abc"]


def test_extra_special_tokens_take_ids_from_the_merges(tmp_path):
    """vocab_size counts every special token: 3 extras leave 3 fewer merges, the same ones."""
    documents = corpus_documents(5)
    extra = ["<|im_start|>", "<|im_end|>", "<|pad|>"]
    result = train_bpe(documents, 400, PATTERNS["gpt2"], show_progress=False, extra_specials=3)
    assert result.num_merges == 400 - NUM_BYTES - 1 - 3
    again = train_bpe(documents, 400, PATTERNS["gpt2"], show_progress=False, extra_specials=3)
    plain = train_bpe(documents, 397, PATTERNS["gpt2"], show_progress=False)
    assert list(result.ranks.items()) == list(again.ranks.items()) == list(plain.ranks.items())
    save_tokenizer(tmp_path, result.ranks, kind="bpe", pattern="gpt2", special_tokens=extra)
    enc = load_tokenizer(tmp_path)
    assert enc.n_vocab == 400
    assert enc.encode(EOT + "".join(extra), allowed_special="all") == [396, 397, 398, 399]
    for document in documents:
        assert enc.encode_ordinary(document) == result.encode_known(document)


def test_vocab_accounting_with_extra_specials_names_the_key():
    with pytest.raises(BadInput, match=r"tokenizer\.vocab_size.*maximum vocab_size 261"):
        # 2 merges at most (see above) + 256 bytes + <|endoftext|> + 2 extras.
        train_bpe(["abab"], 300, PATTERNS["gpt2"], show_progress=False, extra_specials=2)
    with pytest.raises(BadInput, match=r"tokenizer\.vocab_size': must be >= 259"):
        train_bpe(["abab"], 258, PATTERNS["gpt2"], show_progress=False, extra_specials=2)
    assert train_bpe(["abab"], 259, PATTERNS["gpt2"], False, extra_specials=2).num_merges == 0
