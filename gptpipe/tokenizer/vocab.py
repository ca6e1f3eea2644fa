"""Character- and word-level vocabularies (`tokenizer.kind: char` and `word`).

Both are `tiktoken.Encoding` subclasses, so every part of the pipeline (sharding, training,
generation, evaluation, model folders) takes them where it takes a BPE: the base class holds
the vocabulary (each token's UTF-8 bytes as a "rank", no merges) and answers
`encode_single_token`, `special_tokens_set`, `eot_token`, `n_vocab` and `decode_tokens_bytes`;
the encoding methods are overridden, because neither vocabulary is a byte-pair encoding:

- char: one token per character of the corpus (sorted by code point), then `<|endoftext|>`,
  then `<|unk|>` for characters the corpus never had. decode(encode(x)) == x for text made of
  the corpus's characters; any other character comes back as `<|unk|>`'s text, U+FFFD.
- word: lower-cased words (runs of `\\w`) and single punctuation characters, the
  `vocab_size - 2` most frequent in the corpus (ties in string order), then
  `<|endoftext|>`, then `<|unk|>` for the rest. Whitespace is not kept: each token decodes
  as one space then its text, so decode(encode(x)) == "".join(" " + t for t in
  word_pieces(x)) with out-of-vocabulary pieces as `<|unk|>` (see `word_round_trip`), and
  decode(a + b) == decode(a) + decode(b), as a continuation appended to its prompt needs.

Both are stored as a tokenizer folder like a BPE's: `tokenizer.tiktoken` lists each token's
bytes and id, `tokenizer.json` says the kind (and, for word, the corpus's bytes per token,
which bits per byte on shards needs: word tokens do not keep the text's bytes).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import tiktoken

from gptpipe.errors import BadInput
from gptpipe.tokenizer.special import EOT

UNK = "<|unk|>"
# The character `<|unk|>` decodes to in a char vocabulary (the Unicode replacement character).
CHAR_UNK_TEXT = "\ufffd"
# Word-level split: runs of word characters, or one character that is neither a word
# character nor whitespace (punctuation). Case-independent, so it splits the original text
# exactly as its lower-cased form.
WORD_PATTERN = r"\w+|[^\w\s]"
_WORD_RE = re.compile(WORD_PATTERN)
_WORD_START = re.compile(r"\w")  # a piece that is a word, not a punctuation mark
# The UTF-8 byte-order mark: a file's signature, not text.
BOM = "\ufeff"
# tiktoken's base class compiles a pattern of its own; ours never reaches it.
WHOLE_TOKEN_PATTERN = r"[\s\S]"


def word_pieces(text: str) -> list[str]:
    """The word-level pieces of `text`: lower-cased words and punctuation marks."""
    return [piece.lower() for piece in _WORD_RE.findall(text)]


class WholeTokenEncoding(tiktoken.Encoding):
    """A fixed list of whole tokens behind tiktoken's interface: the base class holds each
    token's bytes (as a "rank", no merges) for decoding, and `_encode` (text without special
    tokens -> ids) replaces tiktoken's byte-pair encoding; `<|endoftext|>` is `eot_id`."""

    kind: str
    eot_id: int

    # ------------------------------------------------------------------ encoding

    def encode_ordinary(self, text: str) -> list[int]:
        return self._encode(text).tolist()

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | Collection[str] = set(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        return self._encode_special(text, allowed_special, disallowed_special).tolist()

    def encode_to_numpy(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | Collection[str] = set(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> np.ndarray:
        return self._encode_special(text, allowed_special, disallowed_special)

    def encode_ordinary_batch(self, text: list[str], *, num_threads: int = 8) -> list[list[int]]:
        with ThreadPoolExecutor(max(1, num_threads)) as pool:
            return list(pool.map(self.encode_ordinary, text))

    def encode_batch(
        self,
        text: list[str],
        *,
        num_threads: int = 8,
        allowed_special: Literal["all"] | Collection[str] = set(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[list[int]]:
        return [
            self.encode(t, allowed_special=allowed_special, disallowed_special=disallowed_special)
            for t in text
        ]

    def _encode_special(
        self,
        text: str,
        allowed: Literal["all"] | Collection[str],
        disallowed: Literal["all"] | Collection[str],
    ) -> np.ndarray:
        """tiktoken's rules: `<|endoftext|>` is one token where allowed, an error where
        disallowed (the default), ordinary text otherwise."""
        if allowed == "all" or EOT in allowed:
            parts = text.split(EOT)
            pieces: list[np.ndarray] = []
            for i, part in enumerate(parts):
                if i:
                    pieces.append(np.array([self.eot_id], dtype=np.uint32))
                pieces.append(self._encode(part))
            return np.concatenate(pieces)
        if (disallowed == "all" or EOT in disallowed) and EOT in text:
            raise ValueError(
                f"Encountered text corresponding to disallowed special token {EOT!r}; "
                "pass allowed_special or disallowed_special=() to encode it"
            )
        return self._encode(text)

    def _encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------------ decoding

    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        return b"".join(self.decode_tokens_bytes(tokens))

    def decode(self, tokens: Sequence[int], errors: str = "replace") -> str:
        return self.decode_bytes(tokens).decode("utf-8", errors=errors)

    def text_bytes(self, tokens: Sequence[int]) -> int:
        """UTF-8 bytes of the source text `tokens` (no special tokens) stand for."""
        return len(self.decode_bytes(tokens))

    def describe(self) -> dict[str, Any]:
        """What tokenizer.json records beyond the token list (kind-specific)."""
        return {}


class VocabEncoding(WholeTokenEncoding):
    """A fixed vocabulary of whole text tokens, then `<|endoftext|>`, then `<|unk|>` for
    text the vocabulary does not have."""

    def __init__(self, name: str, tokens: Sequence[str], unknown: str) -> None:
        # ids: tokens in order, then <|endoftext|>, then <|unk|> (whose text is `unknown`).
        ranks = {token.encode("utf-8"): i for i, token in enumerate(tokens)}
        if len(ranks) != len(tokens):
            raise ValueError("vocabulary lists a token twice")
        self.eot_id = len(tokens)
        self.unk_id = len(tokens) + 1
        ranks[unknown.encode("utf-8")] = self.unk_id
        super().__init__(
            name,
            pat_str=WHOLE_TOKEN_PATTERN,
            mergeable_ranks=ranks,
            special_tokens={EOT: self.eot_id},
            explicit_n_vocab=len(tokens) + 2,
        )
        self.tokens = list(tokens)
        self.unknown = unknown
        self._lookup = {token: i for i, token in enumerate(tokens)}


class CharEncoding(VocabEncoding):
    """One token per character; unknown characters become `<|unk|>` (decoded as U+FFFD)."""

    kind = "char"

    def __init__(self, chars: Sequence[str]) -> None:
        for c in chars:
            if len(c) != 1:
                raise ValueError(f"char vocabulary entry {c!r} is not one character")
        # A corpus holding U+FFFD itself needs no separate unknown token text: it is one.
        known = [c for c in chars if c != CHAR_UNK_TEXT]
        super().__init__("gptpipe-char", known, CHAR_UNK_TEXT)
        self._codepoints = np.array([ord(c) for c in known], dtype=np.uint32)
        self._order = np.argsort(self._codepoints, kind="stable")
        self._sorted = self._codepoints[self._order]

    def _encode(self, text: str) -> np.ndarray:
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        if self._sorted.size == 0:
            return np.full(points.shape, self.unk_id, dtype=np.uint32)
        at = np.searchsorted(self._sorted, points).clip(max=self._sorted.size - 1)
        found = self._sorted[at] == points
        return np.where(found, self._order[at], self.unk_id).astype(np.uint32)


class WordEncoding(VocabEncoding):
    """Lower-cased words and punctuation; the rest is `<|unk|>`; whitespace is not kept."""

    kind = "word"

    def __init__(self, words: Sequence[str], bytes_per_token: float) -> None:
        super().__init__("gptpipe-word", words, UNK)
        self.bytes_per_token = float(bytes_per_token)
        # Each token decodes with one leading space (specials included, so decoding is
        # additive over concatenation).
        self._spelled = [(" " + w).encode("utf-8") for w in words] + [
            (" " + EOT).encode("utf-8"),
            (" " + UNK).encode("utf-8"),
        ]

    def _encode(self, text: str) -> np.ndarray:
        get, unk = self._lookup.get, self.unk_id
        return np.array([get(p, unk) for p in word_pieces(text)], dtype=np.uint32)

    def decode_tokens_bytes(self, tokens: Sequence[int]) -> list[bytes]:
        spelled = self._spelled
        try:
            return [spelled[int(t)] for t in tokens]
        except IndexError:
            raise KeyError(f"token id out of range 0..{len(spelled) - 1}") from None

    def text_bytes(self, tokens: Sequence[int]) -> int:
        """Estimated source bytes: word tokens drop whitespace and case, so a token counts
        the corpus's average (its UTF-8 bytes over its tokens, whitespace included)."""
        return round(len(tokens) * self.bytes_per_token)

    def scored_text_bytes(self, text: str) -> int:
        """Exact UTF-8 bytes of `text` after its first token (what perplexity scores)."""
        first = _WORD_RE.search(text)
        return len(text[first.end() :].encode("utf-8")) if first else 0

    def describe(self) -> dict[str, Any]:
        return {"bytes_per_token": self.bytes_per_token}


def word_round_trip(encoding: WordEncoding, text: str) -> str:
    """What decode(encode(text)) gives: the stated loss of the word-level vocabulary."""
    known = set(encoding.tokens)
    return "".join(" " + (p if p in known else UNK) for p in word_pieces(text))


def train_char(documents: Iterable[str], origin: str = "corpus") -> list[str]:
    """The corpus's distinct characters, sorted by code point. A corpus of nothing but
    whitespace (and byte-order marks) is bad input naming `origin`: too short to learn from."""
    seen: set[str] = set()
    for document in documents:
        seen.update(document)
    if all(c.isspace() or c == BOM for c in seen):
        raise BadInput(
            f"{origin}: too short for a char vocabulary (tokenizer.kind char): no text, only "
            "whitespace"
        )
    return sorted(seen)


def train_word(
    documents: Iterable[str], vocab_size: int, origin: str = "corpus"
) -> tuple[list[str], float]:
    """The `vocab_size - 2` most frequent pieces (ties: alphabetical), and the corpus's
    UTF-8 bytes per token (documents' text over their pieces, each document's `<|endoftext|>`
    not counted). A corpus without a word (a run of `\\w`: only punctuation, symbols such
    as emoji, or whitespace) is bad input naming `origin`: too short to learn words from,
    where it would otherwise give a vocabulary of punctuation or of nothing, and fail later."""
    counts: collections.Counter[str] = collections.Counter()
    n_bytes = 0
    for document in documents:
        counts.update(word_pieces(document))
        n_bytes += len(document.encode("utf-8"))
    if not any(_WORD_START.match(piece) for piece in counts):
        raise BadInput(
            f"{origin}: too short for a word vocabulary (tokenizer.kind word): no words, only "
            "punctuation, symbols or whitespace"
        )
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    words = [word for word, _ in ranked[: max(0, vocab_size - 2)]]
    n_tokens = sum(counts.values())
    return words, (n_bytes / n_tokens if n_tokens else 1.0)
