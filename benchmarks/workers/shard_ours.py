"""bench_shard's gptpipe side: the shard stage end to end (streaming, encoding threads,
writing the Arrow shards and the manifest).

    python -m benchmarks.workers.shard_ours CORPUS TOKENIZER THREADS OUT

Prints {"seconds", "tokens"} (tokens: the manifest's count). Its peak memory is the parent's
`wait4` figure for the whole process, these imports included.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from gptpipe.config import ShardConfig
from gptpipe.stages.shard import run


def main(argv: list[str] | None = None) -> None:
    corpus, tok, threads, out = (sys.argv[1:] if argv is None else argv)[:4]
    t0 = time.perf_counter()
    manifest = run(ShardConfig(workers=int(threads)), Path(corpus), Path(tok), Path(out), False)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "tokens": manifest["tokens"]}))


if __name__ == "__main__":
    main()
