"""Download benchmark: the `download` stage normalising a large local corpus, at two sizes.

Corpus: tinyshakespeare copies cut into documents (as `bench_shard.py` builds it), given to
`gptpipe download` as a local path (the instruction and classification sets come from the
offline mirror). Each run is a fresh `gptpipe download` process; its peak RSS comes from the
kernel (`wait4`). The corpus is streamed in blocks, so peak memory should not grow with the
corpus; the reference line is the process at the smallest size.

    python -m benchmarks.bench_download                  # 10 and 400 MB, 3 runs each
    python -m benchmarks.bench_download --sizes 1 --repeat 1
    python -m benchmarks.bench_download --quick --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench_shard import build_corpus
from benchmarks.harness import MIRROR, machine, median, python_module, run_worker


def run_download(corpus: Path, out: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one `gptpipe download` of `corpus`."""
    argv = python_module("gptpipe", "download", "--out", out, "-S", f"data.corpus={corpus}")
    argv += ["-S", f"data.instruct={MIRROR / 'instruction-data.json'}"]
    argv += ["-S", f"data.classify={MIRROR / 'SMSSpamCollection'}"]
    run = run_worker(argv, expect_json=False)
    return run.seconds, run.peak_rss_mb


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[10.0, 400.0], help="MB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 and 4 MB, 1 run each")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat = [1.0, 4.0], 1
    results: dict[str, Any] = {}
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        folder = Path(tmp)
        for size in args.sizes:
            corpus = folder / f"corpus-{size:g}.txt"
            build_corpus(corpus, size)
            mb = corpus.stat().st_size / 1e6
            runs = [run_download(corpus, folder / "raw") for _ in range(args.repeat)]
            seconds = median(s for s, _ in runs)
            peak = max(p for _, p in runs)
            results[f"{size:g}"] = {"corpus_mb": mb, "median_seconds": seconds, "peak_rss_mb": peak}
            print(
                f"{mb:.0f} MB corpus: median {seconds:.2f} s ({mb / seconds:.0f} MB/s), "
                f"peak RSS {peak:.0f} MB",
                flush=True,
            )
            corpus.unlink()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
