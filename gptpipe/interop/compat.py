"""Which tokenizer a converted GPT-2 checkpoint needs, and whether the pipeline's matches it.

GPT-2's vocabulary (50257 ids) gets GPT-2's tokenizer; any other vocabulary must come with
a `vocab.json` equal to the pipeline's tokenizer. Mismatches are bad input naming the key.
"""

from __future__ import annotations

from pathlib import Path

from gptpipe.errors import BadInput
from gptpipe.fsutil import read_json
from gptpipe.interop.gpt2_formats import GPT2Checkpoint
from gptpipe.interop.gpt2_vocab import GPT2_VOCAB, vocab_merges_to_ranks
from gptpipe.interop.hub import NamedSize
from gptpipe.tokenizer.folder import (
    META_FILE,
    RANKS_FILE,
    gpt2_ranks_path,
    load_tokenizer,
    read_ranks,
    save_gpt2,
    tokenizer_hash,
)
from gptpipe.tokenizer.special import EOT


def check_size(checkpoint: GPT2Checkpoint, size: NamedSize) -> None:
    c = checkpoint.config
    got = (c.n_layer, c.n_head, c.n_embd, c.vocab_size, c.block_size)
    want = (size.n_layer, size.n_head, size.n_embd, size.vocab_size, size.block_size)
    if got != want:
        raise BadInput(
            f"{checkpoint.folder}: holds a model of (layers, heads, width, vocab, context) "
            f"{got}, not {size.name}'s {want}"
        )


def folder_vocab(folder: Path) -> dict[str, int] | None:
    """The vocabulary a checkpoint folder ships (vocab.json or OpenAI's encoder.json), if any."""
    for name in ("vocab.json", "encoder.json"):
        path = folder / name
        if path.is_file():
            vocab = read_json(path)
            if not isinstance(vocab, dict):
                raise BadInput(f"{path}: expected a JSON object of token -> id")
            return vocab
    return None


def tokenizer_kind(tokenizer: Path) -> tuple[str, int]:
    path = tokenizer / META_FILE
    if not path.is_file():
        raise BadInput(f"{path}: not found (is {tokenizer} a tokenizer folder?)")
    meta = read_json(path)
    try:
        return str(meta.get("kind", "?")), int(meta["n_vocab"])
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"{path}: not a tokenizer description ({exc})") from None


def matching_tokenizer(
    checkpoint: GPT2Checkpoint, source: str, tokenizer: Path | None, tmp: Path
) -> Path:
    """The tokenizer folder to ship with the converted weights, checked against `tokenizer`.

    GPT-2's vocabulary (50257 ids; or a folder whose vocab.json is GPT-2's) gets GPT-2's
    tokenizer, and the pipeline's tokenizer must be GPT-2's too (tokenizer.kind: gpt2). Any
    other vocabulary must come with a vocab.json equal to the pipeline's tokenizer.
    """
    vocab = folder_vocab(checkpoint.folder)
    # vocab.json lists special tokens among the others: these are not byte-level tokens.
    special = {EOT} | (load_tokenizer(tokenizer).special_tokens_set if tokenizer else set())
    ranks = vocab_merges_to_ranks(vocab, special) if vocab is not None else None
    vocab_size = checkpoint.config.vocab_size
    is_gpt2 = vocab_size == GPT2_VOCAB and (ranks is None or ranks == read_ranks(gpt2_ranks_path()))
    if is_gpt2:
        save_gpt2(tmp / "gpt2")
        if tokenizer is not None and tokenizer_hash(tokenizer) != tokenizer_hash(tmp / "gpt2"):
            kind, n_vocab = tokenizer_kind(tokenizer)
            raise BadInput(
                f"params key 'base.source': {source} has GPT-2's vocabulary ({GPT2_VOCAB} ids) "
                f"but the pipeline's tokenizer {tokenizer} is not GPT-2's (kind {kind}, "
                f"{n_vocab} ids): the ids would not match; set tokenizer.kind: gpt2 and "
                "tokenizer.min_count: 0"
            )
        return tmp / "gpt2"
    if tokenizer is None:
        raise BadInput(
            f"{checkpoint.folder}: a vocabulary of {vocab_size} ids is not GPT-2's; "
            "give the matching tokenizer folder (--tokenizer)"
        )
    _, n_vocab = tokenizer_kind(tokenizer)
    if ranks is None or n_vocab != vocab_size or ranks != read_ranks(tokenizer / RANKS_FILE):
        raise BadInput(
            f"params key 'base.source': {source} has a vocabulary of {vocab_size} ids that is "
            f"not the one of the pipeline's tokenizer {tokenizer} ({n_vocab} ids)"
            + ("" if ranks is not None else "; the folder has no vocab.json to compare")
        )
    return tokenizer
