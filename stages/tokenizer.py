"""DVC stage `tokenizer`: train a byte-level BPE on the corpus, write GPT-2's tokenizer, or a
fixed vocabulary of bytes, the corpus's characters or its words."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from gptpipe import default_paths
from gptpipe.config import TokenizerConfig
from gptpipe.errors import BadInput, ConfigError
from gptpipe.fsutil import write_json
from gptpipe.metrics import ran_with, staged_with_details, wall_seconds
from gptpipe.options import CorpusOption, ParamsOption, SetOption, StageDetailsOption, section
from gptpipe.outputs import Output, check_paths
from gptpipe.progress import wrote
from gptpipe.tokenizer.bpe import train_bpe
from gptpipe.tokenizer.folder import (
    PATTERNS,
    TOKENIZER_FOLDER,
    gpt2_encoding,
    load_tokenizer,
    save_bytes,
    save_gpt2,
    save_subset,
    save_tokenizer,
    save_vocab,
    special_token_ids,
    vocabulary_clash,
)
from gptpipe.tokenizer.subset import GPT2SubsetEncoding, count_gpt2_tokens, kept_tokens
from gptpipe.tokenizer.vocab import CharEncoding, WordEncoding, train_char, train_word
from gptpipe.tokens.sample import SampleStats, sample_texts


def run(
    cfg: TokenizerConfig,
    corpus: Path,
    out: Path,
    show_progress: bool = True,
    details: Path | None = None,
) -> dict[str, Any]:
    """Write the tokenizer folder `out` (and beside it the run details `details`, together);
    return a summary (kind, n_vocab, merges, special tokens, seconds; `sample`: corpus and
    sampled bytes, for the kinds that read the corpus).

    kind=gpt2 (min_count 0) and kind=byte need no corpus; kind=gpt2 with min_count n >= 1
    keeps the GPT-2 tokens the corpus has at least n times (the rest spelled with those).
    kind=bpe trains `vocab_size - 257 - len(special_tokens)` merges on the corpus's
    documents (split on the `<|endoftext|>` lines, which are never part of a merge);
    `<|endoftext|>` and then `cfg.special_tokens` get the ids after them. kind=char collects
    the corpus's characters, kind=word counts its lower-cased words and punctuation and keeps
    the `vocab_size - 2` most frequent; both add `<|endoftext|>` and `<|unk|>` after them.
    Those that read the corpus read at most `tokenizer.sample_bytes` of it, spread evenly over
    the file (`gptpipe.tokens.sample`): the whole corpus when it is no larger.
    """
    started = time.perf_counter()
    sample = SampleStats()
    with staged_with_details(out, details) as (new_out, new_details):
        merges = _write(cfg, corpus, new_out, show_progress, sample)
        encoding = load_tokenizer(new_out)
        summary = {
            "kind": "gpt2-subset" if isinstance(encoding, GPT2SubsetEncoding) else cfg.kind,
            "pattern": {"bpe": cfg.pattern, "char": "char", "word": "word"}.get(cfg.kind, "gpt2"),
            "n_vocab": encoding.n_vocab,
            "merges": merges,
            "special_tokens": special_token_ids(encoding),
            "seconds": wall_seconds(started),
        }
        if sample.corpus_bytes:  # the kinds that learn from the corpus
            summary["sample"] = {
                "corpus_bytes": sample.corpus_bytes,
                "sampled_bytes": sample.sampled_bytes,
                "windows": sample.windows,
            }
        if new_details is not None:
            keys = ("kind", "n_vocab", "merges", *(["sample"] if "sample" in summary else []))
            record = {k: summary[k] for k in keys} | {"wall_seconds": summary["seconds"]}
            write_json(new_details, record | ran_with(tokenizer=cfg))
    return summary


def _write(
    cfg: TokenizerConfig, corpus: Path, out: Path, show_progress: bool, sample: SampleStats
) -> int | None:
    """Write the tokenizer folder `out`; return the number of BPE merges (None if no BPE).
    The kinds that learn from the corpus read `tokenizer.sample_bytes` of it (`sample`)."""
    if cfg.kind == "gpt2" and cfg.min_count == 0:
        save_gpt2(out)
        return None
    if cfg.kind == "byte":
        save_bytes(out)
        return None
    documents = sample_texts(corpus, cfg.sample_bytes, sample)  # bounded pieces
    first = next(documents, None)
    if first is None and sample.windows:
        raise ConfigError(
            "tokenizer.sample_bytes",
            f"{cfg.sample_bytes} bytes of {corpus} hold no text to learn from (a sample "
            "needs at least a few whole words; 0: the whole corpus)",
        )
    if first is None:
        raise BadInput(f"{corpus}: corpus is empty (no text to train the tokenizer on)")
    everything = itertools.chain([first], documents)
    if cfg.kind == "gpt2":
        gpt2 = gpt2_encoding()
        kept = kept_tokens(count_gpt2_tokens(gpt2, everything), cfg.min_count)
        save_subset(out, GPT2SubsetEncoding(gpt2, kept, cfg.min_count))
    elif cfg.kind == "char":
        save_vocab(out, CharEncoding(train_char(everything, str(corpus))))
    elif cfg.kind == "word":
        save_vocab(out, WordEncoding(*train_word(everything, cfg.vocab_size, str(corpus))))
    else:
        return _train_bpe(cfg, everything, out, show_progress)
    return None


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
    corpus: CorpusOption = default_paths.CORPUS,
    out: Annotated[Path, typer.Option(help="Tokenizer folder to write.")] = default_paths.TOKENIZER,
    details: StageDetailsOption = None,
) -> None:
    """Write the tokenizer: a BPE trained on the corpus (tokenizer.kind=bpe), GPT-2's (gpt2;
    with tokenizer.min_count n >= 1, only the tokens the corpus has n times, which spell the
    rest),
    the 256 bytes (byte), the corpus's characters (char) or its most frequent words (word).

    The folder holds tokenizer.tiktoken (tokens and ids) and tokenizer.json (kind, pattern,
    special tokens: <|endoftext|>, then tokenizer.special_tokens; <|unk|> for char and word).

    A corpus over tokenizer.sample_bytes is learned from a sample of that size,
    spread evenly over it (deterministic).
    """
    cfg = section("tokenizer", params, set_)
    outputs = [Output("--out", out, TOKENIZER_FOLDER), Output("--details", details)]
    check_paths(outputs, [("--params", params), ("--corpus", corpus)])
    summary = run(cfg, corpus, out, details=details)
    said = f"{summary['kind']}, {summary['n_vocab']} ids ({summary['seconds']:.1f} s)"
    wrote("tokenizer", out, details, summary=said)
