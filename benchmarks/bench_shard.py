"""Shard benchmark: the `shard` stage against plain tiktoken `encode_ordinary_batch`.

Corpus (built in a temporary folder from the offline mirror): tinyshakespeare repeated,
each copy cut into 16 documents at blank lines, joined by `<|endoftext|>` lines, up to
`--mb` megabytes. Tokenizer: GPT-2's (the packaged ranks). Both sides run in a fresh
subprocess with the same parallelism (`--threads`: tiktoken's `num_threads`, the stage's
`shard.workers`):

- reference: read the file, split it into documents, `encode_ordinary_batch` (nothing
  written); its peak memory holds the whole corpus and its ids;
- gptpipe: `gptpipe.stages.shard.run` end to end (streaming, encoding threads, writing the
  Arrow shards and the manifest).

Throughput is corpus MB/s (median of `--repeat` runs); peak memory is the process's peak RSS
as the kernel counts it (`wait4`). Both sides encode in threads of one process.
Run at two sizes (`--sizes`) it shows whether memory grows with the corpus.

    python -m benchmarks.bench_shard                    # 50 and 200 MB, 2 threads, 3 runs
    python -m benchmarks.bench_shard --quick            # 2 MB, 1 run (the test suite)

Targets (issue 3): throughput >= 80% of the reference; peak memory < 1 GB at 200 MB and not
growing with the corpus size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    EOT,
    MIRROR,
    alternate,
    machine,
    median,
    paired_ratio,
    python_module,
    run_worker,
)

# Each side runs in its own interpreter (benchmarks/workers/shard_*.py); it prints one JSON
# line: seconds and tokens.
OURS, THEIRS = "benchmarks.workers.shard_ours", "benchmarks.workers.shard_theirs"


def build_corpus(path: Path, megabytes: float) -> None:
    """tinyshakespeare copies, 16 documents each, separated by `<|endoftext|>` lines."""
    text = (MIRROR / "tinyshakespeare.txt").read_text(encoding="utf-8")
    paragraphs = text.split("\n\n")
    step = len(paragraphs) // 16 + 1
    docs = ["\n\n".join(paragraphs[i : i + step]) for i in range(0, len(paragraphs), step)]
    copy = f"\n{EOT}\n".join(docs)
    target = int(megabytes * 1_000_000)
    with path.open("w", encoding="utf-8") as fh:
        written = 0
        while written < target:
            piece = copy + f"\n{EOT}\n"
            fh.write(piece)
            written += len(piece.encode("utf-8"))


def measure(worker: str, corpus: Path, tok: Path, threads: int, out: Path) -> dict[str, Any]:
    """Run one side in a fresh process; its peak RSS comes from the kernel (`wait4`).

    Both sides work in threads of one process, so the process's peak is all of it. Reading
    the peak after the fact costs nothing while the side runs, where polling /proc would
    take CPU from a 2-core machine and skew the throughput.
    """
    run = run_worker(python_module(worker, corpus, tok, threads, out))
    return run.data | {"peak_rss_mb": run.peak_rss_mb}


def compare(
    corpus: Path, tok: Path, threads: int, folder: Path, repeats: int
) -> dict[str, list[dict[str, Any]]]:
    """Both sides on `corpus`, alternated `repeats` times (each pair writes its own shards)."""
    count = iter(range(2 * repeats))

    def side(worker: str) -> Any:
        def once() -> dict[str, Any]:
            return measure(worker, corpus, tok, threads, folder / f"shards-{next(count) // 2}")

        return once

    return alternate({"tiktoken": side(THEIRS), "gptpipe": side(OURS)}, repeats)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[50.0, 200.0], help="MB")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 MB, 1 run.")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat = [2.0], 1
    results: dict[str, Any] = {"machine": machine(), "threads": args.threads}
    results |= {"repeat": args.repeat, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-shard-") as tmp:
        folder = Path(tmp)
        from gptpipe.tokenizer.folder import save_gpt2

        save_gpt2(folder / "gpt2")
        for size in args.sizes:
            corpus = folder / f"corpus-{size:g}.txt"
            build_corpus(corpus, size)
            mb = corpus.stat().st_size / 1e6
            runs = compare(corpus, folder / "gpt2", args.threads, folder, args.repeat)
            corpus.unlink()
            entry: dict[str, Any] = {"corpus_mb": round(mb, 2)}
            for name, items in runs.items():
                seconds = median(r["seconds"] for r in items)
                entry[name] = {
                    "median_seconds": round(seconds, 3),
                    "mb_per_s": round(mb / seconds, 2),
                    "mtokens_per_s": round(items[0]["tokens"] / seconds / 1e6, 2),
                    "tokens": items[0]["tokens"],
                    "peak_rss_mb": round(max(r["peak_rss_mb"] for r in items), 1),
                }
            if entry["gptpipe"]["tokens"] != entry["tiktoken"]["tokens"]:
                raise SystemExit(f"token counts differ: {entry}")
            entry["throughput_ratio"] = round(
                entry["gptpipe"]["mb_per_s"] / entry["tiktoken"]["mb_per_s"], 3
            )
            # Each repeat runs the two sides back to back; the median of the per-pair ratios
            # cancels the machine's slow drifts better than the ratio of the two medians.
            entry["paired_ratio_median"] = round(
                paired_ratio(
                    [r["seconds"] for r in runs["tiktoken"]],
                    [r["seconds"] for r in runs["gptpipe"]],
                ),
                3,
            )
            results["sizes"][f"{size:g}"] = entry
            print(
                f"{results['machine']}; {mb:.0f} MB, {args.threads} threads: "
                f"tiktoken {entry['tiktoken']['mb_per_s']}"
                f" MB/s ({entry['tiktoken']['mtokens_per_s']} M tok/s, peak "
                f"{entry['tiktoken']['peak_rss_mb']} MB); gptpipe shard "
                f"{entry['gptpipe']['mb_per_s']} MB/s ({entry['gptpipe']['mtokens_per_s']} M "
                f"tok/s, peak {entry['gptpipe']['peak_rss_mb']} MB); throughput ratio "
                f"{entry['throughput_ratio']}, paired {entry['paired_ratio_median']}"
                " (target >= 0.8)",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
