"""bench_bpe's gptpipe side: train BPE on a corpus, then compress the held-out text.

    python -m benchmarks.workers.bpe_ours CORPUS HELDOUT VOCAB THREADS OUT

Prints {"seconds", "import_seconds", "n_vocab", "bytes_per_token"}: `seconds` is the training
alone, `import_seconds` gptpipe's imports (timed here, so they come after the clock starts).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    corpus, heldout, vocab, threads, out = (sys.argv[1:] if argv is None else argv)[:5]
    t0 = time.perf_counter()
    from gptpipe.tokenizer.bpe import train_bpe
    from gptpipe.tokenizer.folder import PATTERNS, load_tokenizer, save_tokenizer
    from gptpipe.tokens.corpus import iter_documents

    t1 = time.perf_counter()
    result = train_bpe(
        iter_documents(corpus),
        int(vocab),
        PATTERNS["gpt2"],
        show_progress=False,
        workers=int(threads),
    )
    t2 = time.perf_counter()
    save_tokenizer(out, result.ranks, kind="bpe", pattern="gpt2")
    enc = load_tokenizer(out)
    text = Path(heldout).read_text(encoding="utf-8")
    n = len(enc.encode_ordinary(text))
    assert enc.decode(enc.encode_ordinary(text)) == text
    print(
        json.dumps(
            {
                "seconds": t2 - t1,
                "import_seconds": t1 - t0,
                "n_vocab": enc.n_vocab,
                "bytes_per_token": len(text.encode("utf-8")) / n,
            }
        )
    )


if __name__ == "__main__":
    main()
