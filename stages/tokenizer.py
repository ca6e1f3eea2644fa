"""DVC stage `tokenizer`: train a byte-level BPE on the corpus, write GPT-2's tokenizer, or a
fixed vocabulary of bytes, the corpus's characters or its words."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from gptpipe import layout
from gptpipe.cli.options import CorpusOption, ParamsOption, SetOption, section
from gptpipe.config import TokenizerConfig
from gptpipe.errors import BadInput, ConfigError
from gptpipe.progress import console
from gptpipe.tokenizer.bpe import train_bpe
from gptpipe.tokenizer.folder import (
    PATTERNS,
    load_tokenizer,
    save_bytes,
    save_gpt2,
    save_tokenizer,
    save_vocab,
    special_token_ids,
    vocabulary_clash,
)
from gptpipe.tokenizer.vocab import CharEncoding, WordEncoding, train_char, train_word
from gptpipe.tokens.corpus import iter_texts


def run(
    cfg: TokenizerConfig, corpus: Path, out: Path, show_progress: bool = True
) -> dict[str, Any]:
    """Write the tokenizer folder `out`; return a summary (kind, n_vocab, merges, special
    tokens, seconds).

    kind=gpt2 and kind=byte need no corpus. kind=bpe trains `vocab_size - 257 -
    len(special_tokens)` merges on the corpus's documents (split on the `<|endoftext|>` lines,
    which are never part of a merge); `<|endoftext|>` and then `cfg.special_tokens` get the
    ids after them. kind=char collects the corpus's characters, kind=word counts its
    lower-cased words and punctuation and keeps the `vocab_size - 2` most frequent; both
    add `<|endoftext|>` and `<|unk|>` after them.
    """
    started = time.perf_counter()
    merges = None
    if cfg.kind == "gpt2":
        save_gpt2(out)
    elif cfg.kind == "byte":
        save_bytes(out)
    else:
        documents = iter_texts(corpus)  # bounded pieces, same pre-token counts
        first = next(documents, None)
        if first is None:
            raise BadInput(f"{corpus}: corpus is empty (no text to train the tokenizer on)")
        everything = itertools.chain([first], documents)
        if cfg.kind == "char":
            save_vocab(out, CharEncoding(train_char(everything)))
        elif cfg.kind == "word":
            save_vocab(out, WordEncoding(*train_word(everything, cfg.vocab_size)))
        else:
            merges = _train_bpe(cfg, everything, out, show_progress)
    encoding = load_tokenizer(out)
    summary = {
        "kind": cfg.kind,
        "pattern": {"bpe": cfg.pattern, "char": "char", "word": "word"}.get(cfg.kind, "gpt2"),
        "n_vocab": encoding.n_vocab,
        "merges": merges,
        "special_tokens": special_token_ids(encoding),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if show_progress:
        console.print(
            f"tokenizer: {summary['kind']}, {summary['n_vocab']} ids -> {out} "
            f"({summary['seconds']:.1f} s)"
        )
    return summary


def _train_bpe(
    cfg: TokenizerConfig, documents: Iterator[str], out: Path, show_progress: bool
) -> int:
    """Train and write the BPE; return its number of merges."""
    result = train_bpe(
        documents,
        cfg.vocab_size,
        PATTERNS[cfg.pattern],
        show_progress,
        workers=cfg.workers,
        extra_specials=len(cfg.special_tokens),
    )
    for i, token in enumerate(cfg.special_tokens):
        rank = result.ranks.get(token.encode("utf-8"))
        if rank is not None:
            raise ConfigError(f"tokenizer.special_tokens[{i}]", vocabulary_clash(token, rank))
    save_tokenizer(out, result.ranks, "bpe", cfg.pattern, special_tokens=cfg.special_tokens)
    return result.num_merges


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    corpus: CorpusOption = layout.CORPUS,
    out: Annotated[Path, typer.Option(help="Tokenizer folder to write.")] = layout.TOKENIZER,
) -> None:
    """Write the tokenizer: a BPE trained on the corpus (tokenizer.kind=bpe), GPT-2's (gpt2),
    the 256 bytes (byte), the corpus's characters (char) or its most frequent words (word).

    The folder holds tokenizer.tiktoken (tokens and ids) and tokenizer.json (kind, pattern,
    special tokens: <|endoftext|>, then tokenizer.special_tokens; <|unk|> for char and word).
    """
    run(section("tokenizer", params, set_), corpus, out)
