"""DVC stage `tokenizer`: train a byte-level BPE on the corpus, or write GPT-2's tokenizer."""

from __future__ import annotations

import itertools
import time
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
    save_gpt2,
    save_tokenizer,
    special_token_ids,
    vocabulary_clash,
)
from gptpipe.tokens.corpus import iter_texts


def run(
    cfg: TokenizerConfig, corpus: Path, out: Path, show_progress: bool = True
) -> dict[str, Any]:
    """Write the tokenizer folder `out`; return a summary (kind, n_vocab, merges, special
    tokens, seconds).

    kind=gpt2 needs no corpus. kind=bpe trains `vocab_size - 257 - len(special_tokens)`
    merges on the corpus's documents (split on the `<|endoftext|>` lines, which are never
    part of a merge); `<|endoftext|>` and then `cfg.special_tokens` get the ids after them.
    """
    started = time.perf_counter()
    if cfg.kind == "gpt2":
        save_gpt2(out)
        merges = None
    else:
        documents = iter_texts(corpus)  # bounded pieces, same pre-token counts
        first = next(documents, None)
        if first is None:
            raise BadInput(f"{corpus}: corpus is empty (no text to train the tokenizer on)")
        pattern = PATTERNS[cfg.pattern]
        result = train_bpe(
            itertools.chain([first], documents),
            cfg.vocab_size,
            pattern,
            show_progress,
            workers=cfg.workers,
            extra_specials=len(cfg.special_tokens),
        )
        for i, token in enumerate(cfg.special_tokens):
            rank = result.ranks.get(token.encode("utf-8"))
            if rank is not None:
                raise ConfigError(f"tokenizer.special_tokens[{i}]", vocabulary_clash(token, rank))
        save_tokenizer(out, result.ranks, "bpe", cfg.pattern, special_tokens=cfg.special_tokens)
        merges = result.num_merges
    encoding = load_tokenizer(out)
    summary = {
        "kind": cfg.kind,
        "pattern": cfg.pattern if cfg.kind == "bpe" else "gpt2",
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


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    corpus: CorpusOption = layout.CORPUS,
    out: Annotated[Path, typer.Option(help="Tokenizer folder to write.")] = layout.TOKENIZER,
) -> None:
    """Train a byte-level BPE tokenizer on the corpus (tokenizer.kind=bpe) or write GPT-2's.

    The folder holds tokenizer.tiktoken (ranks) and tokenizer.json (pattern, special tokens:
    <|endoftext|>, then tokenizer.special_tokens).
    """
    run(section("tokenizer", params, set_), corpus, out)
