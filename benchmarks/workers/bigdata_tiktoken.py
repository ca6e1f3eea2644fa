"""bench_bigdata's reference side: the corpus encoded with tiktoken's `encode_ordinary_batch`,
streamed (a corpus of GBs does not fit in memory as documents and Python lists of ids).

    python -m benchmarks.workers.bigdata_tiktoken CORPUS TOKENIZER THREADS

The file is read in blocks cut at document boundaries and safe places (the reader the shard
stage uses, `gptpipe.tokens.corpus.read_pieces`), each block split into documents, and each
block's documents encoded by one `encode_ordinary_batch(docs, num_threads=THREADS)` call;
nothing is written. The time counts reading, splitting and encoding, as the shard stage's
does (which also hashes, splits train/val and writes Arrow files). Prints {"seconds",
"encode_seconds" (the encode calls alone), "tokens" (ids plus one end-of-text per document,
as the shards count them)}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from gptpipe.tokenizer.folder import load_tokenizer
from gptpipe.tokens.corpus import read_pieces, split_documents

BLOCK_BYTES = 32 << 20  # a batch: about 10,000 documents of 3 KB


def main(argv: list[str] | None = None) -> None:
    corpus, tok, threads = (sys.argv[1:] if argv is None else argv)[:3]
    enc = load_tokenizer(tok)
    tokens = documents = 0
    encode_seconds = 0.0
    t0 = time.perf_counter()
    carry = ""  # the document open at the end of the previous block
    for _, data in read_pieces(Path(corpus), BLOCK_BYTES):
        pieces = split_documents(data.decode("utf-8"))
        pieces[0] = carry + pieces[0]
        carry = pieces.pop()  # may continue in the next block
        batch = [p for p in pieces if p]
        started = time.perf_counter()
        ids = enc.encode_ordinary_batch(batch, num_threads=int(threads))
        encode_seconds += time.perf_counter() - started
        tokens += sum(map(len, ids)) + len(ids)
        documents += len(ids)
    if carry:
        tokens += len(enc.encode_ordinary(carry)) + 1
        documents += 1
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "encode_seconds": encode_seconds, "tokens": tokens}))


if __name__ == "__main__":
    main()
