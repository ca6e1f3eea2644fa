"""Tokenizers as tiktoken encodings, stored as a folder with two files.

- `tokenizer.tiktoken`: the merge ranks in tiktoken's format (base64 bytes, rank).
- `tokenizer.json`: kind, split pattern, special tokens, vocabulary size, ranks sha256.

A trained byte-level BPE, GPT-2's own ranks (shipped in the package, so they work offline)
and the plain byte vocabulary (`byte`: the 256 byte values, no merges) are encoded by
`tiktoken`; the `char` and `word` vocabularies (`gptpipe.tokenizer.vocab`) and GPT-2's cut
down to a corpus's tokens (`gpt2-subset`, `gptpipe.tokenizer.subset`) by tiktoken
subclasses, stored the same way (each token's bytes and id in the ranks file).
BPE ids: the ranks (256 bytes, then merges), `<|endoftext|>` (which separates documents),
then a trained BPE's extra special tokens (the params key `tokenizer.special_tokens`) in
the order given. So the end-of-text id is `eot_id()`, not
always the last id.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import tiktoken

from gptpipe.errors import BadInput
from gptpipe.fsutil import atomic_dir
from gptpipe.outputs import folder_kind
from gptpipe.tokenizer.special import EOT, special_token_problem
from gptpipe.tokenizer.subset import GPT2SubsetEncoding
from gptpipe.tokenizer.vocab import (
    UNK,
    WORD_PATTERN,
    CharEncoding,
    VocabEncoding,
    WordEncoding,
)

RANKS_FILE = "tokenizer.tiktoken"
META_FILE = "tokenizer.json"
TOKENIZER_FOLDER = folder_kind("tokenizer folder", {RANKS_FILE, META_FILE})  # gptpipe.outputs
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"

PATTERNS = {
    # GPT-2's pre-tokenisation split, as in tiktoken's "gpt2" encoding.
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    # GPT-4's (cl100k_base): case-insensitive contractions, digits in groups of at most three.
    "gpt4": (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
        r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
    ),
}


def gpt2_ranks_path() -> Path:
    """GPT-2's ranks as shipped inside the package (MIT, OpenAI)."""
    return Path(str(resources.files("gptpipe") / "assets" / "gpt2.tiktoken"))


def ranks_to_text(ranks: dict[bytes, int]) -> str:
    """Serialise ranks in tiktoken's format, ordered by rank."""
    return "".join(
        f"{base64.b64encode(token).decode('ascii')} {rank}\n"
        for token, rank in sorted(ranks.items(), key=lambda item: item[1])
    )


def read_ranks(path: Path) -> dict[bytes, int]:
    """Parse a `.tiktoken` ranks file; a malformed one is bad input naming the file."""
    ranks: dict[bytes, int] = {}
    try:
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):  # noqa: B007
            if not line:
                continue
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
    except FileNotFoundError:
        raise BadInput(f"{path}: tokenizer ranks file not found") from None
    except ValueError:
        raise BadInput(f"{path}: line {number} is not '<base64> <rank>'") from None
    return ranks


def save_tokenizer(
    out_dir: Path | str,
    ranks: dict[bytes, int],
    kind: str,
    pattern: str,
    special_tokens: Sequence[str] = (),
) -> None:
    """Write a tokenizer folder atomically.

    `<|endoftext|>` gets the id after the last rank, the extra `special_tokens` the ids after
    it, in order. A special token whose UTF-8 bytes are also a token of `ranks` is bad input:
    a vocabulary (vocab.json, as exported) could not hold both under one string.
    """
    if pattern not in PATTERNS:
        raise BadInput(f"tokenizer pattern {pattern!r}: allowed {', '.join(PATTERNS)}")
    special_tokens = list(special_tokens)
    problem = special_token_problem(special_tokens)
    if problem is not None:
        raise BadInput(f"special token {special_tokens[problem[0]]!r}: {problem[1]}")
    for token in special_tokens:
        rank = ranks.get(token.encode("utf-8"))
        if rank is not None:
            raise BadInput(f"special token {token!r}: {vocabulary_clash(token, rank)}")
    text = ranks_to_text(ranks)
    first = max(ranks.values()) + 1
    special = {token: first + i for i, token in enumerate([EOT, *special_tokens])}
    meta = {
        "kind": kind,
        "pattern": pattern,
        "pat_str": PATTERNS[pattern],
        "special_tokens": special,
        "n_vocab": first + len(special),
        "ranks_sha256": hashlib.sha256(text.encode("ascii")).hexdigest(),
    }
    with atomic_dir(out_dir) as tmp:
        (tmp / RANKS_FILE).write_text(text, encoding="ascii")
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def vocabulary_clash(token: str, rank: int) -> str:
    """Why a special token equal to a vocabulary token is refused (for error messages)."""
    return (
        f"is also a token of the vocabulary (rank {rank}); choose a string the split pattern "
        "cuts into several pieces, such as <|name|>"
    )


def gpt2_ranks() -> dict[bytes, int]:
    """GPT-2's ranks as packaged, checked against their sha256."""
    data = gpt2_ranks_path().read_bytes()
    if hashlib.sha256(data).hexdigest() != GPT2_RANKS_SHA256:
        raise BadInput(f"{gpt2_ranks_path()}: packaged GPT-2 ranks fail their sha256 check")
    return read_ranks(gpt2_ranks_path())


def save_gpt2(out_dir: Path | str) -> None:
    """Write GPT-2's tokenizer (the packaged ranks, checked against their sha256)."""
    save_tokenizer(out_dir, gpt2_ranks(), kind="gpt2", pattern="gpt2")


@functools.cache
def gpt2_encoding() -> tiktoken.Encoding:
    """GPT-2's encoding from the packaged ranks (built once per process)."""
    ranks = gpt2_ranks()
    return tiktoken.Encoding(
        name="gptpipe-gpt2",
        pat_str=PATTERNS["gpt2"],
        mergeable_ranks=ranks,
        special_tokens={EOT: len(ranks)},
        explicit_n_vocab=len(ranks) + 1,
    )


def save_bytes(out_dir: Path | str) -> None:
    """Write the byte vocabulary: the 256 byte values (ids 0..255) and `<|endoftext|>` (256).

    A BPE with no merges, so tiktoken encodes it, GPT-2's split pattern cuts the text and the
    Hugging Face export works as for any byte-level BPE.
    """
    save_tokenizer(out_dir, {bytes([b]): b for b in range(256)}, kind="byte", pattern="gpt2")


def save_vocab(out_dir: Path | str, encoding: VocabEncoding) -> None:
    """Write a char or word vocabulary as a tokenizer folder (tokens' bytes and ids as the
    ranks; `<|endoftext|>` and `<|unk|>` after the tokens)."""
    ranks = {token.encode("utf-8"): i for i, token in enumerate(encoding.tokens)}
    ranks[encoding.unknown.encode("utf-8")] = encoding.unk_id
    meta = {
        "kind": encoding.kind,
        "pattern": encoding.kind,
        "pat_str": WORD_PATTERN if encoding.kind == "word" else "",
        "special_tokens": {EOT: encoding.eot_id},
        "unknown_token": {UNK: encoding.unk_id},
        "n_vocab": encoding.n_vocab,
        **encoding.describe(),
    }
    _write_folder(out_dir, ranks, meta)


def save_subset(out_dir: Path | str, encoding: GPT2SubsetEncoding) -> None:
    """Write GPT-2's tokenizer cut down to a corpus's tokens: the 256 bytes and the kept
    tokens as the ranks (ids 0..n-1), `<|endoftext|>` after them."""
    ranks = {encoding.decode_single_token_bytes(i): i for i in range(encoding.eot_id)}
    meta = {
        "kind": encoding.kind,
        "pattern": "gpt2",
        "pat_str": PATTERNS["gpt2"],
        "special_tokens": {EOT: encoding.eot_id},
        "n_vocab": encoding.n_vocab,
        **encoding.describe(),
    }
    _write_folder(out_dir, ranks, meta)


def _write_folder(out_dir: Path | str, ranks: dict[bytes, int], meta: dict) -> None:
    """Write a whole-token vocabulary's folder atomically: its ranks, and `meta` plus the
    ranks' sha256 as the description."""
    text = ranks_to_text(ranks)
    meta = meta | {"ranks_sha256": hashlib.sha256(text.encode("ascii")).hexdigest()}
    with atomic_dir(out_dir) as tmp:
        (tmp / RANKS_FILE).write_text(text, encoding="ascii")
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _load_subset(directory: Path, meta: dict, special: dict[str, int]) -> GPT2SubsetEncoding:
    """A gpt2-subset tokenizer from its folder; tokens that are not GPT-2's are bad input."""
    ranks = read_ranks(directory / RANKS_FILE)
    gpt2 = gpt2_encoding()
    by_id = sorted(ranks.items(), key=lambda item: item[1])
    n = len(by_id)
    try:
        if [i for _, i in by_id] != list(range(n)) or special != {EOT: n}:
            raise ValueError(f"token ids must be 0..{n - 1}, then {EOT}")
        if [token for token, _ in by_id[:256]] != [bytes([b]) for b in range(256)]:
            raise ValueError("ids 0..255 must be the 256 byte values")
        kept = [gpt2.encode_single_token(token) for token, _ in by_id[256:]]
        encoding = GPT2SubsetEncoding(gpt2, kept, int(meta["min_count"]))
    except KeyError as exc:
        raise BadInput(
            f"{directory}: inconsistent gpt2-subset tokenizer ({exc} is not a GPT-2 token or "
            "a tokenizer.json key)"
        ) from None
    except (ValueError, TypeError) as exc:
        raise BadInput(f"{directory}: inconsistent gpt2-subset tokenizer ({exc})") from None
    if encoding.n_vocab != n + 1:
        raise BadInput(f"{directory}: inconsistent gpt2-subset tokenizer (kept tokens repeat)")
    return encoding


def _load_vocab(directory: Path, meta: dict, special: dict[str, int]) -> VocabEncoding:
    """A char or word vocabulary from its folder; inconsistent ids are bad input."""
    ranks = read_ranks(directory / RANKS_FILE)
    by_id = sorted(ranks.items(), key=lambda item: item[1])
    n = len(by_id) - 1  # the last id but <|endoftext|> is <|unk|>
    ids_ok = [i for _, i in by_id] == [*range(n), n + 1]
    if not ids_ok or special != {EOT: n} or int(meta.get("n_vocab", -1)) != n + 2:
        raise BadInput(
            f"{directory / META_FILE}: inconsistent {meta['kind']} vocabulary (token ids must "
            f"be 0..{n - 1}, then {EOT}, then {UNK})"
        )
    try:
        tokens = [token.decode("utf-8") for token, _ in by_id[:n]]
        if meta["kind"] == "char":
            return CharEncoding(tokens)
        return WordEncoding(tokens, float(meta["bytes_per_token"]))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{directory}: inconsistent {meta['kind']} vocabulary ({exc})") from None


def load_tokenizer(directory: Path | str) -> tiktoken.Encoding:
    """Load a tokenizer folder (the tokenizer stage's output, or any model folder).

    bpe, gpt2 and byte folders give a `tiktoken.Encoding`, char and word folders one of its
    subclasses in `gptpipe.tokenizer.vocab` (the same methods).
    """
    directory = Path(directory)
    meta_path = directory / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        pat_str = meta["pat_str"]
        special = {str(k): int(v) for k, v in meta["special_tokens"].items()}
        n_vocab = int(meta["n_vocab"])
    except FileNotFoundError:
        raise BadInput(f"{meta_path}: not found (is {directory} a tokenizer folder?)") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadInput(f"{meta_path}: not a tokenizer description ({exc})") from None
    if EOT not in special:
        raise BadInput(f"{meta_path}: no {EOT} special token")
    if meta.get("kind") in ("char", "word"):
        return _load_vocab(directory, meta, special)
    if meta.get("kind") == GPT2SubsetEncoding.kind:
        return _load_subset(directory, meta, special)
    ranks = read_ranks(directory / RANKS_FILE)
    try:
        return tiktoken.Encoding(
            name=f"gptpipe-{meta.get('kind', 'bpe')}",
            pat_str=pat_str,
            mergeable_ranks=ranks,
            special_tokens=special,
            explicit_n_vocab=n_vocab,
        )
    except (ValueError, AssertionError) as exc:
        raise BadInput(f"{directory}: inconsistent tokenizer ({exc})") from None


def tokenizer_hash(directory: Path | str) -> str:
    """sha256 of the ranks and description, identifying a tokenizer (shards record it)."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for name in (RANKS_FILE, META_FILE):
        path = directory / name
        if not path.is_file():
            raise BadInput(f"{path}: not found")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def eot_id(encoding: tiktoken.Encoding) -> int:
    """The id of `<|endoftext|>` (right after the merges; extra special tokens follow it)."""
    return encoding.encode_single_token(EOT)


def special_token_ids(encoding: tiktoken.Encoding) -> dict[str, int]:
    """Every special token of `encoding` and its id, in id order (`<|endoftext|>` first)."""
    ids = {token: encoding.encode_single_token(token) for token in encoding.special_tokens_set}
    return dict(sorted(ids.items(), key=lambda item: item[1]))
