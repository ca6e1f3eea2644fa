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

    python benchmarks/bench_shard.py                    # 50 and 200 MB, 2 threads, 3 runs
    python benchmarks/bench_shard.py --quick            # 2 MB, 1 run (the test suite)

Targets (issue 3): throughput >= 80% of the reference; peak memory < 1 GB at 200 MB and not
growing with the corpus size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MIRROR = Path(
    os.environ.get("GPTPIPE_MIRROR", Path(__file__).resolve().parents[2] / "shared/mirror")
)
EOT = "<|endoftext|>"

_THEIRS = r"""
import sys, time
from gptpipe.tokens.corpus import iter_documents
from gptpipe.tokenizer.folder import load_tokenizer
corpus, tok, threads, out = sys.argv[1:5]
enc = load_tokenizer(tok)
t0 = time.perf_counter()
docs = list(iter_documents(corpus))
ids = enc.encode_ordinary_batch(docs, num_threads=int(threads))
seconds = time.perf_counter() - t0
print(seconds, sum(map(len, ids)) + len(ids))
"""

_OURS = r"""
import sys, time
from pathlib import Path
from gptpipe.config import ShardConfig
from gptpipe.stages.shard import run
corpus, tok, threads, out = sys.argv[1:5]
t0 = time.perf_counter()
manifest = run(ShardConfig(workers=int(threads)), Path(corpus), Path(tok), Path(out), False)
seconds = time.perf_counter() - t0
print(seconds, manifest["tokens"])
"""


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


def measure(script: str, corpus: Path, tok: Path, threads: int, out: Path) -> dict:
    """Run one side in a subprocess; its peak RSS comes from the kernel (`wait4`'s rusage).

    Both sides work in threads of one process, so the process's peak is all of it. Reading
    the peak after the fact costs nothing while the side runs, where polling /proc would
    take CPU from a 2-core machine and skew the throughput.
    """
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(corpus), str(tok), str(threads), str(out)],
            stdout=stdout,
            stderr=stderr,
            text=True,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"benchmark side failed:\n{stderr.read()}")
        seconds, tokens = stdout.read().split()
    # ru_maxrss is in KiB on Linux.
    return {"seconds": float(seconds), "tokens": int(tokens), "peak_rss_mb": usage.ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[50.0, 200.0], help="MB")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 MB, 1 run.")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat = [2.0], 1
    results: dict = {"threads": args.threads, "repeat": args.repeat, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-shard-") as tmp:
        folder = Path(tmp)
        from gptpipe.tokenizer.folder import save_gpt2

        save_gpt2(folder / "gpt2")
        for size in args.sizes:
            corpus = folder / f"corpus-{size:g}.txt"
            build_corpus(corpus, size)
            mb = corpus.stat().st_size / 1e6
            runs: dict[str, list[dict]] = {"tiktoken": [], "gptpipe": []}
            for i in range(args.repeat):
                for name, script in (("tiktoken", _THEIRS), ("gptpipe", _OURS)):
                    out = folder / f"shards-{i}"
                    runs[name].append(measure(script, corpus, folder / "gpt2", args.threads, out))
            corpus.unlink()
            entry: dict = {"corpus_mb": round(mb, 2)}
            for name, items in runs.items():
                seconds = statistics.median(r["seconds"] for r in items)
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
            pairs = zip(runs["tiktoken"], runs["gptpipe"], strict=True)
            entry["paired_ratio_median"] = round(
                statistics.median(theirs["seconds"] / ours["seconds"] for theirs, ours in pairs), 3
            )
            results["sizes"][f"{size:g}"] = entry
            print(
                f"{mb:.0f} MB, {args.threads} threads: tiktoken {entry['tiktoken']['mb_per_s']}"
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
