"""BPE training benchmark: gptpipe's trainer against the `tokenizers` ByteLevel BPE trainer.

Corpus (built in a temporary folder from the offline mirror, nothing is copied into the
repo): the first 90% of tinyshakespeare, repeated as separate documents (joined by
`<|endoftext|>` lines) up to `--mb` megabytes; the last 10% is the held-out text. Both
trainers read the same file, learn the same vocabulary size (256 bytes + merges +
`<|endoftext|>`) with the GPT-2 split pattern, and use the same thread count (`--threads`,
RAYON_NUM_THREADS for `tokenizers`, worker processes for gptpipe). Each trainer runs
`--repeat` times in a fresh subprocess (so neither profits from a warm pool or cache of the
other); the median wall time is reported, with compression = UTF-8 bytes per token of the
held-out text (higher is better).

    python -m benchmarks.bench_bpe                 # 5 MB, vocab 8192, 2 threads, 5 runs
    python -m benchmarks.bench_bpe --quick         # tiny, for the test suite
    python -m benchmarks.bench_bpe --json out.json

Targets (issue 3): bytes/token >= theirs, time <= 2x theirs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import EOT, MIRROR, alternate, machine, median, python_module, run_worker

# Each trainer runs in its own interpreter (benchmarks/workers/bpe_*.py); it prints one JSON
# line: seconds and bytes/token.
OURS, THEIRS = "benchmarks.workers.bpe_ours", "benchmarks.workers.bpe_theirs"


def build_corpus(folder: Path, megabytes: float) -> tuple[Path, Path]:
    """Write corpus.txt (90% of tinyshakespeare repeated) and heldout.txt (the last 10%)."""
    text = (MIRROR / "tinyshakespeare.txt").read_text(encoding="utf-8")
    cut = text.rfind("\n\n", 0, int(len(text) * 0.9)) + 2
    train, heldout = text[:cut].strip("\n"), text[cut:]
    target = int(megabytes * 1_000_000)
    copies = max(1, round(target / len(train.encode("utf-8"))))
    corpus = folder / "corpus.txt"
    corpus.write_text(f"\n{EOT}\n".join([train] * copies) + "\n", encoding="utf-8")
    (folder / "heldout.txt").write_text(heldout, encoding="utf-8")
    return corpus, folder / "heldout.txt"


def run_once(
    worker: str, corpus: Path, heldout: Path, vocab: int, threads: int, out: Path
) -> dict[str, Any]:
    env = {"RAYON_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "true"}
    argv = python_module(worker, corpus, heldout, vocab, threads, out)
    return run_worker(argv, env=env).data


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=5.0, help="Corpus size in MB.")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="0.3 MB, vocab 1024, 1 run.")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args(argv)
    if args.quick:
        args.mb, args.vocab, args.repeat = 0.3, 1024, 1
    with tempfile.TemporaryDirectory(prefix="bench-bpe-") as tmp:
        folder = Path(tmp)
        corpus, heldout = build_corpus(folder, args.mb)
        outs = iter(range(2 * args.repeat))  # a fresh output folder for every run

        def side(worker: str) -> Any:
            def once() -> dict[str, Any]:
                out = folder / f"t{next(outs)}"
                return run_once(worker, corpus, heldout, args.vocab, args.threads, out)

            return once

        # interleaved, so drift in machine load hits both
        runs = alternate({"tokenizers": side(THEIRS), "gptpipe": side(OURS)}, args.repeat)
        size = corpus.stat().st_size
    result: dict[str, Any] = {
        "machine": machine(),
        "corpus": f"tinyshakespeare[:90%] repeated as documents, {size / 1e6:.2f} MB",
        "heldout": "tinyshakespeare[90%:]",
        "vocab_size": args.vocab,
        "threads": args.threads,
        "repeat": args.repeat,
    }
    for name, items in runs.items():
        result[name] = {
            "median_seconds": median(r["seconds"] for r in items),
            "seconds": [round(r["seconds"], 3) for r in items],
            "bytes_per_token": items[0]["bytes_per_token"],
            "n_vocab": items[0]["n_vocab"],
        }
    ours, theirs = result["gptpipe"], result["tokenizers"]
    result["time_ratio"] = ours["median_seconds"] / theirs["median_seconds"]
    result["compression_ratio"] = ours["bytes_per_token"] / theirs["bytes_per_token"]
    print(
        f"{result['machine']}; corpus: {result['corpus']}; vocab {args.vocab}; "
        f"{args.threads} threads"
    )
    for name in ("tokenizers", "gptpipe"):
        r = result[name]
        print(
            f"{name:>10}: median {r['median_seconds']:.3f} s {r['seconds']}, "
            f"{r['bytes_per_token']:.4f} bytes/token held out, n_vocab {r['n_vocab']}"
        )
    print(
        f"time ratio gptpipe/tokenizers: {result['time_ratio']:.2f} (target <= 2.0); "
        f"compression ratio: {result['compression_ratio']:.4f} (target >= 1.0)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
