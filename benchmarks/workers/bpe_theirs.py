"""bench_bpe's reference side: the `tokenizers` ByteLevel BPE trainer on the same corpus.

    python -m benchmarks.workers.bpe_theirs CORPUS HELDOUT VOCAB THREADS OUT

THREADS and OUT are unused (the parent sets RAYON_NUM_THREADS; nothing is saved); the
arguments are bpe_ours'. Prints {"seconds", "import_seconds", "n_vocab", "bytes_per_token"}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    corpus, heldout, vocab, _threads, _out = (sys.argv[1:] if argv is None else argv)[:5]
    t0 = time.perf_counter()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    t1 = time.perf_counter()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab),
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([corpus], trainer)
    t2 = time.perf_counter()
    text = Path(heldout).read_text(encoding="utf-8")
    n = len(tok.encode(text).ids)
    print(
        json.dumps(
            {
                "seconds": t2 - t1,
                "import_seconds": t1 - t0,
                "n_vocab": tok.get_vocab_size(),
                "bytes_per_token": len(text.encode("utf-8")) / n,
            }
        )
    )


if __name__ == "__main__":
    main()
