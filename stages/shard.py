"""DVC stage `shard`: encode the corpus into Arrow token shards with a train/val split."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from gptpipe import default_paths
from gptpipe.config import ShardConfig
from gptpipe.errors import BadInput
from gptpipe.fsutil import write_json
from gptpipe.metrics import ran_with, staged_with_details, wall_seconds
from gptpipe.options import CorpusOption, ParamsOption, SetOption, StageDetailsOption, section
from gptpipe.outputs import Output, check_paths
from gptpipe.progress import progress, wrote
from gptpipe.tokenizer.folder import eot_id, load_tokenizer, tokenizer_hash
from gptpipe.tokens.shard_writer import (
    CorpusStats,
    ShardWriter,
    TrainValSplitter,
    encode_corpus,
    new_manifest,
    write_manifest,
)
from gptpipe.tokens.shards import SHARDS_FOLDER, dtype_for_vocab


def run(
    cfg: ShardConfig,
    corpus: Path,
    tokenizer_dir: Path,
    out: Path,
    show_progress: bool = True,
    details: Path | None = None,
) -> dict[str, Any]:
    """Write the shards folder `out` (Arrow files + manifest.json) and the run details
    `details` (wall seconds, tokens), together; return the manifest.

    The corpus is streamed in pieces and encoded in `shard.workers` threads; the files
    are byte-identical whatever the worker count.
    """
    started = time.perf_counter()
    if not corpus.is_file():
        raise BadInput(f"{corpus}: corpus file not found")
    encoding = load_tokenizer(tokenizer_dir)
    dtype = dtype_for_vocab(encoding.n_vocab)
    total_bytes = corpus.stat().st_size
    stats = CorpusStats()
    bar = progress()
    with staged_with_details(out, details) as (tmp, new_details), bar:
        tmp.mkdir(mode=0o755)
        task = bar.add_task("shard", total=total_bytes, visible=show_progress)
        writers = {s: ShardWriter(tmp, s, dtype, cfg.shard_tokens) for s in ("train", "val")}
        splitter = TrainValSplitter(
            writers["train"], writers["val"], cfg.split_chunk_tokens, cfg.val_fraction, cfg.seed
        )
        encoded = encode_corpus(
            corpus,
            tokenizer_dir,
            dtype,
            workers=cfg.workers,
            stats=stats,
            on_bytes=lambda n: bar.advance(task, n),
        )
        tokens = _split_stream(encoded, splitter, corpus, cfg.split_chunk_tokens)
        manifest = new_manifest(
            dtype=dtype,
            eot_id=eot_id(encoding),
            vocab_size=encoding.n_vocab,
            tokenizer_hash=tokenizer_hash(tokenizer_dir),
            corpus_sha256=stats.sha256,
            corpus_bytes=stats.bytes,
            documents=stats.documents,
            tokens=tokens,
            split=_split_record(cfg, splitter),
            splits={s: w.close() for s, w in writers.items()},
        )
        write_manifest(tmp, manifest)
        if new_details is not None:
            run_details = {"documents": stats.documents, "tokens": tokens, "workers": cfg.workers}
            record = run_details | {"wall_seconds": wall_seconds(started)}
            write_json(new_details, record | ran_with(shard=cfg))
    return manifest


def _split_record(cfg: ShardConfig, splitter: TrainValSplitter) -> dict[str, Any]:
    """How the stream was split, as the manifest records it."""
    rule = {"val_fraction": cfg.val_fraction, "split_chunk_tokens": cfg.split_chunk_tokens}
    return rule | {"seed": cfg.seed, "chunks": dict(splitter.chunks)}


def _split_stream(
    encoded: Iterable[np.ndarray], splitter: TrainValSplitter, corpus: Path, chunk: int
) -> int:
    """Feed the encoded documents to the train/val splitter; the number of tokens. A corpus
    without text, or too small for two chunks, is bad input naming it."""
    tokens = 0
    for ids in encoded:
        tokens += len(ids)
        splitter.append(ids)
    if tokens == 0:
        raise BadInput(f"{corpus}: corpus is empty (no documents with text)")
    if splitter.close() < 2:
        raise BadInput(
            f"{corpus}: corpus too small for a train/val split: {tokens} tokens, need at "
            f"least 2 chunks of shard.split_chunk_tokens={chunk} ({2 * chunk} tokens)"
        )
    return tokens


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    corpus: CorpusOption = default_paths.CORPUS,
    tokenizer: Annotated[
        Path, typer.Option(help="Tokenizer folder (gptpipe tokenizer).")
    ] = default_paths.TOKENIZER,
    out: Annotated[Path, typer.Option(help="Shards folder to write.")] = default_paths.SHARDS,
    details: StageDetailsOption = None,
) -> None:
    """Encode the corpus into Arrow token shards (train/val) with a manifest.json.

    Each document is followed by <|endoftext|>; the token stream is cut into chunks of
    shard.split_chunk_tokens, each assigned to val with probability shard.val_fraction.
    """
    cfg = section("shard", params, set_)
    outputs = [Output("--out", out, SHARDS_FOLDER), Output("--details", details)]
    check_paths(outputs, [("--params", params), ("--corpus", corpus), ("--tokenizer", tokenizer)])
    manifest = run(cfg, corpus, tokenizer, out, details=details)
    splits = manifest["splits"]
    said = (
        f"{manifest['documents']} documents, {manifest['tokens']} tokens (train "
        f"{splits['train']['tokens']}, val {splits['val']['tokens']}, {manifest['dtype']})"
    )
    wrote("shard", out, details, summary=said)
