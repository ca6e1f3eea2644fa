"""Every benchmark in one command, and the results table `benchmarks/RESULTS.md`.

Each benchmark runs as its own `python -m benchmarks.bench_x ... --json FILE` process (under
`flock /tmp/gptpipe-bench.lock` when `flock` exists, so that nothing else measures meanwhile).
Its results are stored with the date, the command, its wall time and the machine
(`gptpipe.report.environment`: CPU model and the flags that matter, cores, RAM, GPU, Python and
package versions, git commit) as `benchmarks/results/<name>.json`; RESULTS.md is then rendered
from every stored record (`benchmarks/table.py`), so rerunning one benchmark (`--only`) updates
its section and keeps the others, each saying when and where it was measured.

    make bench                                        # everything (hours on 2 cores)
    python -m benchmarks.run_all --only train,generate
    python -m benchmarks.run_all --quick --out /tmp/r # everything small (minutes)
    python -m benchmarks.run_all --render             # RESULTS.md from the stored records

A benchmark that fails is reported (its stderr tail) and the others still run; the exit status
is then 1. Not part of CI's pass/fail: the test suite smoke-runs `--quick`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.harness import REPO
from benchmarks.table import SUMMARIES, readme_table, render, seeds_table

RESULTS_DIR = REPO / "benchmarks" / "results"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
README = REPO / "README.md"
README_MARKERS = (
    "<!-- benchmarks:start (written by benchmarks/run_all.py) -->",
    "<!-- benchmarks:end -->",
)
SEEDS_MARKERS = (
    "<!-- seeds:start (written by benchmarks/run_all.py) -->",
    "<!-- seeds:end -->",
)
LOCK = "/tmp/gptpipe-bench.lock"
WORK = Path("/tmp/gptpipe-bench-work")  # what one benchmark leaves for the next
EXTRA_PACKAGES = ("transformers", "tokenizers")  # the references' versions


@dataclass(frozen=True)
class Benchmark:
    name: str
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ("--quick",)

    @property
    def module(self) -> str:
        return f"benchmarks.bench_{self.name}"


# In the order they run: quick, independent measurements first, the long runs last.
BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("bpe"),
    Benchmark("shard"),
    Benchmark("download"),
    Benchmark("bigdata"),
    Benchmark("evaluate"),
    Benchmark("generate"),
    Benchmark("serve"),
    Benchmark("train", ("--repeats", "3")),
    Benchmark("load_memory"),
    # The pipeline's default run leaves its project in WORK; classify fine-tunes its base model
    # (else bench_classify builds the same base itself, another pretraining run).
    Benchmark("pipeline", ("--keep", "{work}/pipeline")),
    Benchmark("classify", ("--base", "{work}/pipeline/models/base")),
    Benchmark("seeds"),
)
# Records this command renders but does not make: the GPU check's, written on a GPU machine by
# benchmarks/device_check.sh and copied into the results folder.
ELSEWHERE = ("device",)
assert {b.name for b in BENCHMARKS} | set(ELSEWHERE) == set(SUMMARIES)


def environment() -> dict[str, Any]:
    from gptpipe.report.environment import collect_environment

    found = collect_environment(REPO)
    for name in EXTRA_PACKAGES:
        try:
            found["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found["packages"][name] = None
    return found


def run_one(
    bench: Benchmark, quick: bool, results_dir: Path, lock: bool, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Run one benchmark in its own process; return its record (raise on failure)."""
    args = bench.quick if quick else tuple(a.format(work=WORK) for a in bench.full)
    args += extra
    if "--base" in args and not Path(args[args.index("--base") + 1]).is_dir():
        cut = args.index("--base")
        args = args[:cut] + args[cut + 2 :]  # no base left by the pipeline run: build one
    out = results_dir / f"{bench.name}.json"
    partial = out.with_suffix(".json.partial")
    command = [sys.executable, "-m", bench.module, *args, "--json", str(partial)]
    if lock and shutil.which("flock"):
        command = ["flock", LOCK, *command]
    shown = " ".join(["python", "-m", bench.module, *args])
    print(f"== {bench.name}: {shown}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"{bench.name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    sys.stderr.write(done.stderr[-2000:])
    record = {
        "benchmark": bench.name,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shown,
        "seconds": seconds,
        "environment": environment(),
        "results": json.loads(partial.read_text(encoding="utf-8")),
    }
    SUMMARIES[bench.name](record["results"])  # a result the table cannot read fails here
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    partial.unlink()
    return record


def stored(results_dir: Path) -> dict[str, dict[str, Any]]:
    """The stored record of every known benchmark, in the table's order."""
    records = {}
    for name in [bench.name for bench in BENCHMARKS] + list(ELSEWHERE):
        path = results_dir / f"{name}.json"
        if path.is_file():
            records[name] = json.loads(path.read_text(encoding="utf-8"))
    return records


def update_readme(readme: Path, table: str, markers: tuple[str, str] = README_MARKERS) -> None:
    """Put `table` between two of the README's markers (left alone if they are missing)."""
    text = readme.read_text(encoding="utf-8")
    start, end = markers
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    readme.write_text(f"{head}{start}\n{table}\n{end}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [b.name for b in BENCHMARKS]
    parser.add_argument("--quick", action="store_true", help="every benchmark small (smoke run)")
    parser.add_argument("--only", default="", help=f"comma-separated, of: {', '.join(names)}")
    parser.add_argument("--skip", default="", help="comma-separated benchmarks not to run")
    parser.add_argument("--out", type=Path, default=None, help="folder for records and table")
    parser.add_argument("--render", action="store_true", help="only render the stored records")
    parser.add_argument("--no-lock", action="store_true", help=f"do not take {LOCK}")
    parser.add_argument(
        "--with",
        dest="extra",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="more options for one benchmark, e.g. generate='--configs a' (recorded)",
    )
    args = parser.parse_args(argv)
    chosen = [n for n in args.only.split(",") if n] or names
    skipped = {n for n in args.skip.split(",") if n}
    unknown = (set(chosen) | skipped) - set(names)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; choose from {names}")
    if args.quick and args.out is None:
        parser.error("--quick needs --out: quick figures never replace the stored ones")
    results_dir = args.out or RESULTS_DIR
    results_dir.mkdir(parents=True, exist_ok=True)
    table = (args.out / "RESULTS.md") if args.out else RESULTS_MD
    extra = dict(item.split("=", 1) for item in args.extra if "=" in item)
    if set(extra) - set(names) or len(extra) != len(args.extra):
        parser.error(f"--with takes NAME=ARGS with NAME one of {names}")
    failed: dict[str, str] = {}
    if not args.render:
        if not args.quick and "pipeline" in set(chosen) - skipped:
            shutil.rmtree(WORK / "pipeline", ignore_errors=True)  # never a stale project
        for bench in BENCHMARKS:
            if bench.name in chosen and bench.name not in skipped:
                try:
                    more = tuple(extra.get(bench.name, "").split())
                    run_one(bench, args.quick, results_dir, not args.no_lock, more)
                except (RuntimeError, OSError, ValueError, KeyError) as error:
                    failed[bench.name] = str(error)
                    print(f"!! {error}", file=sys.stderr, flush=True)
    records = stored(results_dir)
    title = "Benchmark results (quick: smoke-run sizes, not figures)" if args.quick else None
    text = render(records, title) if title else render(records)
    table.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {table} ({len(records)} benchmarks)", flush=True)
    if args.out is None:
        update_readme(README, readme_table(records))
        update_readme(README, seeds_table(records), SEEDS_MARKERS)
    if failed and argv is None:
        raise SystemExit(1)
    return {"records": records, "failed": failed, "table": str(table)}


if __name__ == "__main__":
    main()
