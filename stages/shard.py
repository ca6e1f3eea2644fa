"""DVC stage `shard`: encode the corpus into Arrow token shards with a train/val split."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tiktoken
import typer

from gptpipe import layout
from gptpipe.cliutil import ParamsOption, SetOption, section
from gptpipe.config import ShardConfig
from gptpipe.errors import BadInput
from gptpipe.fsutil import atomic_dir
from gptpipe.progress import console, progress
from gptpipe.shards import (
    DTYPES,
    ShardWriter,
    TrainValSplitter,
    dtype_for_vocab,
    new_manifest,
    write_manifest,
)
from gptpipe.tokenizer import eot_id, iter_documents, load_tokenizer, tokenizer_hash

BATCH_DOCUMENTS = 256
BATCH_CHARS = 4_000_000


def _batches(documents: Iterable[str]) -> Iterator[list[str]]:
    """Documents grouped for `encode_ordinary_batch` (bounded count and size)."""
    batch: list[str] = []
    chars = 0
    for document in documents:
        batch.append(document)
        chars += len(document)
        if len(batch) >= BATCH_DOCUMENTS or chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def encode_stream(
    encoding: tiktoken.Encoding, documents: Iterable[str], dtype: str
) -> Iterator[np.ndarray]:
    """Token ids of each batch of documents, `<|endoftext|>` after every document."""
    eot = eot_id(encoding)
    threads = max(1, os.cpu_count() or 1)
    for batch in _batches(documents):
        ids: list[int] = []
        for tokens in encoding.encode_ordinary_batch(batch, num_threads=threads):
            ids.extend(tokens)
            ids.append(eot)
        yield np.asarray(ids, dtype=DTYPES[dtype])


def run(
    cfg: ShardConfig, corpus: Path, tokenizer_dir: Path, out: Path, show_progress: bool = True
) -> dict[str, Any]:
    """Write the shards folder `out` (Arrow files + manifest.json); return the manifest."""
    if not corpus.is_file():
        raise BadInput(f"{corpus}: corpus file not found")
    encoding = load_tokenizer(tokenizer_dir)
    dtype = dtype_for_vocab(encoding.n_vocab)
    digest = hashlib.sha256()
    documents = 0
    total_bytes = corpus.stat().st_size
    bar = progress()
    with atomic_dir(out) as tmp, bar:
        task = bar.add_task("shard", total=total_bytes, visible=show_progress)
        done = 0

        def seen(raw: bytes) -> None:
            nonlocal done
            digest.update(raw)
            done += len(raw)
            if done == total_bytes or done % (1 << 20) < len(raw):
                bar.update(task, completed=done)

        def counted() -> Iterator[str]:
            nonlocal documents
            for document in iter_documents(corpus, on_bytes=seen):
                documents += 1
                yield document

        writers = {s: ShardWriter(tmp, s, dtype, cfg.shard_tokens) for s in ("train", "val")}
        splitter = TrainValSplitter(
            writers["train"], writers["val"], cfg.split_chunk_tokens, cfg.val_fraction, cfg.seed
        )
        tokens = 0
        for ids in encode_stream(encoding, counted(), dtype):
            tokens += len(ids)
            splitter.append(ids)
        if tokens == 0:
            raise BadInput(f"{corpus}: corpus is empty (no documents with text)")
        if splitter.close() < 2:
            raise BadInput(
                f"{corpus}: corpus too small for a train/val split: {tokens} tokens, need at "
                f"least 2 chunks of shard.split_chunk_tokens={cfg.split_chunk_tokens} "
                f"({2 * cfg.split_chunk_tokens} tokens)"
            )
        manifest = new_manifest(
            dtype=dtype,
            eot_id=eot_id(encoding),
            vocab_size=encoding.n_vocab,
            tokenizer_hash=tokenizer_hash(tokenizer_dir),
            corpus_sha256=digest.hexdigest(),
            corpus_bytes=total_bytes,
            documents=documents,
            tokens=tokens,
            split={
                "val_fraction": cfg.val_fraction,
                "split_chunk_tokens": cfg.split_chunk_tokens,
                "seed": cfg.seed,
                "chunks": dict(splitter.chunks),
            },
            splits={s: w.close() for s, w in writers.items()},
        )
        write_manifest(tmp, manifest)
    if show_progress:
        splits = manifest["splits"]
        console.print(
            f"shard: {documents} documents, {tokens} tokens -> {out} "
            f"(train {splits['train']['tokens']}, val {splits['val']['tokens']}, {dtype})"
        )
    return manifest


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    corpus: Annotated[
        Path, typer.Option(help="Corpus text: documents separated by '<|endoftext|>' lines.")
    ] = layout.CORPUS,
    tokenizer: Annotated[
        Path, typer.Option(help="Tokenizer folder (gptpipe tokenizer).")
    ] = layout.TOKENIZER,
    out: Annotated[Path, typer.Option(help="Shards folder to write.")] = layout.SHARDS,
) -> None:
    """Encode the corpus into Arrow token shards (train/val) with a manifest.json.

    Each document is followed by <|endoftext|>; the token stream is cut into chunks of
    shard.split_chunk_tokens, each assigned to val with probability shard.val_fraction.
    """
    run(section("shard", params, set_), corpus, tokenizer, out)
