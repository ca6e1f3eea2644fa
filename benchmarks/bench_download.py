"""Download benchmark: the `download` stage normalising a large local corpus, at two sizes.

Corpus: tinyshakespeare copies cut into documents (as `bench_shard.py` builds it), given to
`gptpipe download` as a local path (the instruction and classification sets come from the
offline mirror). Each run is a fresh `gptpipe download` process; its peak RSS comes from the
kernel (`wait4`). The corpus is streamed in blocks, so peak memory should not grow with the
corpus; the reference line is the process at the smallest size.

    python benchmarks/bench_download.py                  # 10 and 400 MB, 3 runs each
    python benchmarks/bench_download.py --sizes 1 --repeat 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_shard import MIRROR, build_corpus


def run_download(corpus: Path, out: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one `gptpipe download` of `corpus`."""
    cmd = [sys.executable, "-m", "gptpipe", "download", "--out", str(out)]
    cmd += ["-S", f"data.corpus={corpus}"]
    cmd += ["-S", f"data.instruct={MIRROR / 'instruction-data.json'}"]
    cmd += ["-S", f"data.classify={MIRROR / 'SMSSpamCollection'}"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"gptpipe download failed: {' '.join(cmd)}")
    return seconds, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[10.0, 400.0], help="MB")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        folder = Path(tmp)
        for size in args.sizes:
            corpus = folder / f"corpus-{size:g}.txt"
            build_corpus(corpus, size)
            mb = corpus.stat().st_size / 1e6
            runs = [run_download(corpus, folder / "raw") for _ in range(args.repeat)]
            seconds = statistics.median(s for s, _ in runs)
            peak = max(p for _, p in runs)
            results[f"{size:g}"] = {"corpus_mb": mb, "median_seconds": seconds, "peak_rss_mb": peak}
            print(
                f"{mb:.0f} MB corpus: median {seconds:.2f} s ({mb / seconds:.0f} MB/s), "
                f"peak RSS {peak:.0f} MB",
                flush=True,
            )
            corpus.unlink()
    return results


if __name__ == "__main__":
    main()
