"""bench_shard's reference side: read the corpus, split it into documents and encode them all
with tiktoken's `encode_ordinary_batch` (nothing written).

    python -m benchmarks.workers.shard_theirs CORPUS TOKENIZER THREADS OUT

OUT is unused (the arguments are shard_ours'). Prints {"seconds", "tokens"} (tokens: the ids
plus one end-of-text per document, as the shards count them). Its peak memory is the parent's
`wait4` figure for the whole process, these imports included.
"""

from __future__ import annotations

import json
import sys
import time

from gptpipe.tokenizer.folder import load_tokenizer
from gptpipe.tokens.corpus import iter_documents


def main(argv: list[str] | None = None) -> None:
    corpus, tok, threads, _out = (sys.argv[1:] if argv is None else argv)[:4]
    enc = load_tokenizer(tok)
    t0 = time.perf_counter()
    docs = list(iter_documents(corpus))
    ids = enc.encode_ordinary_batch(docs, num_threads=int(threads))
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "tokens": sum(map(len, ids)) + len(ids)}))


if __name__ == "__main__":
    main()
