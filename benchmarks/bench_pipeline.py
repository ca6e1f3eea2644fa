"""The DVC pipeline itself: the wall time of the default end-to-end `dvc repro`, and the time of
a `dvc repro` with nothing to do against the same `dvc repro` of a trivial DAG of the same shape.

The project is the repository's own `dvc.yaml`, `params.yaml`, `gptpipe/` and `stages/`, copied
into a fresh git repository in a temporary folder (the stages run the installed `gptpipe`, this
checkout's code; data comes from the offline mirror through `GPTPIPE_MIRROR`). Measured:

- `end_to_end_s`: the first `dvc repro` (every stage), and the stages it ran;
- `noop_s`: `dvc repro` again, median of `--repeats` runs (it must run no stage);
- the reference: a DAG with the same stage names, the same number of dependency files, params
  and outputs per stage, whose commands only write their outputs. Its no-op `dvc repro` is the
  floor DVC itself sets for a DAG of this shape; the ratio says what our stages add (deps that
  are large or many, params files, plots). The two no-op sides alternate.

    python -m benchmarks.bench_pipeline                 # the default run (minutes), 5 no-ops
    python -m benchmarks.bench_pipeline --quick         # tiny params, 3 no-ops (the test suite)
    python -m benchmarks.bench_pipeline --json out.json

The default run (not --quick) also reports each stage's wall time from `reports/runs/`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.harness import MIRROR, REPO, alternate, machine, median

BIN = Path(sys.executable).parent
# Tiny settings for --quick: the DAG's structure with minutes of work cut to seconds.
QUICK: dict[str, dict[str, Any]] = {
    "data": {"corpus": "data/inputs/corpus.txt", "instruct": "stdlib", "classify": "stdlib"},
    "tokenizer": {"vocab_size": 300},
    "shard": {"split_chunk_tokens": 256},
    "model": {"block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 32},
    "pretrain": {"max_steps": 6, "batch_size": 4, "eval_interval": 3, "eval_batches": 1},
    "instruct": {"max_steps": 2, "batch_size": 2, "eval_interval": 2, "eval_batches": 1},
    "classify": {"epochs": 0.0, "max_steps": 2, "batch_size": 4, "eval_interval": 2},
    "evaluate": {"stride": 32, "batch_size": 64},
    "sample": {"prompts": ["The "], "max_new_tokens": 4, "num_samples": 1},
}
QUICK_CORPUS_BYTES = 60_000
# The reference DAG's stage command, run by its path: DVC runs it where `benchmarks` is not
# importable.
TRIVIAL_STAGE = REPO / "benchmarks" / "workers" / "trivial_stage.py"


def dvc(project: Path, *args: str, timeout: float = 7200) -> tuple[float, str]:
    """(seconds, stdout) of one `dvc` command in `project`; raise with its output on failure."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    env.setdefault("GPTPIPE_MIRROR", str(MIRROR))
    started = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=project, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"dvc {' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return seconds, done.stdout


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w-]+)'", output)


def git_repository(root: Path) -> None:
    """`root` as a committed git + DVC repository."""
    for args in (
        ["init", "-q"],
        ["config", "user.email", "bench@example.invalid"],
        ["config", "user.name", "bench"],
    ):
        subprocess.run(["git", *args], cwd=root, check=True)
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "project"], cwd=root, check=True)


def our_project(root: Path, quick: bool) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("gptpipe", "stages"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    for name in ("dvc.yaml", ".dvcignore", "data/inputs/README.md"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    if quick:
        text = (MIRROR / "tinyshakespeare.txt").read_text(encoding="utf-8")
        corpus = root / "data" / "inputs" / "corpus.txt"  # data.inputs: DVC watches it
        corpus.write_text(text[:QUICK_CORPUS_BYTES], encoding="utf-8")
        for section, values in QUICK.items():
            params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    git_repository(root)
    return root


def resolved(
    dvc_yaml: dict[str, Any], params: dict[str, Any] | None = None
) -> dict[str, dict[str, list[str]]]:
    """Each stage's deps, params and outs (metrics and plots included) as plain paths: the
    `${paths.x}` of dvc.yaml's `vars` and the `${section.key}` of `params` (params.yaml)
    substituted, as DVC does."""
    values = {
        f"paths.{k}": v
        for entry in dvc_yaml.get("vars", [])
        for k, v in entry.get("paths", {}).items()
    }
    for section, keys in (params or {}).items():
        values |= {f"{section}.{k}": v for k, v in (keys or {}).items() if isinstance(v, str)}

    def plain(entries: list[Any]) -> list[str]:
        names = [next(iter(e)) if isinstance(e, dict) else str(e) for e in entries]
        return [re.sub(r"\$\{([\w.]+)\}", lambda m: values[m.group(1)], n) for n in names]

    return {
        name: {
            "deps": plain(stage.get("deps", [])),
            "params": plain(stage.get("params", [])),
            "outs": plain(
                stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", [])
            ),
        }
        for name, stage in dvc_yaml["stages"].items()
    }


def trivial_project(root: Path, stages: dict[str, dict[str, list[str]]]) -> Path:
    """A DAG of `stages`' shape (names, numbers of deps, params and outs, the edges between
    stages, deps shared between stages shared here too) whose commands only write their
    outputs: what DVC itself costs for this DAG with nothing to run."""
    params: dict[str, int] = {}
    spec: dict[str, Any] = {}
    files: dict[str, str] = {}  # our path (an out or a source file) -> the trivial one
    for name, stage in stages.items():
        deps = []
        for dep in stage["deps"]:
            upstream = next((files[o] for o in files if dep == o or dep.startswith(o + "/")), None)
            if upstream is None:
                upstream = files[dep] = f"src/{len(files)}.txt"
                (root / "src").mkdir(parents=True, exist_ok=True)
                (root / upstream).write_text(f"{dep}\n", encoding="utf-8")
            deps.append(upstream)
        keys = [f"p{len(params) + i}" for i in range(len(stage["params"]))]
        params |= {key: 0 for key in keys}
        mine = [f"out/{name}/{i}" for i in range(len(stage["outs"]))]
        files |= dict(zip(stage["outs"], mine, strict=True))
        make = shlex.join([sys.executable, str(TRIVIAL_STAGE), *mine])  # writes `mine`
        spec[name] = {"cmd": make, "deps": sorted(set(deps))}
        if keys:
            spec[name]["params"] = keys
        spec[name]["outs"] = mine
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": spec}, sort_keys=False))
    git_repository(root)
    return root


def stage_seconds(project: Path) -> dict[str, float]:
    """Each stage's own wall time, as its run details record it (reports/runs/<stage>.json)."""
    found = {}
    for path in sorted((project / "reports" / "runs").glob("*.json")):
        details = json.loads(path.read_text(encoding="utf-8"))
        seconds = details.get("wall_seconds", details.get("seconds"))
        if isinstance(seconds, int | float):
            found[path.stem] = float(seconds)
    return found


def json_files(folder: Path) -> dict[str, dict[str, Any]]:
    """{stem: content} of a folder's JSON files: the run's headline metrics
    (reports/metrics/<stage>.json) or every stage's run details (reports/runs/<stage>.json:
    all its figures and the params it ran with), the default run's results."""
    return {
        path.stem: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(folder.glob("*.json"))
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny params (seconds of work)")
    parser.add_argument("--repeats", type=int, default=5, help="no-op runs per side")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: temp)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--keep", type=Path, default=None, help="copy the reproduced project here afterwards"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 3)
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-", dir=args.work) as tmp:
        ours = our_project(Path(tmp) / "ours", args.quick)
        read = lambda name: yaml.safe_load((ours / name).read_text(encoding="utf-8"))  # noqa: E731
        stages = resolved(read("dvc.yaml"), read("params.yaml"))
        (Path(tmp) / "trivial").mkdir()
        trivial = trivial_project(Path(tmp) / "trivial", stages)
        end_to_end, output = dvc(ours, "repro")
        ran = ran_stages(output)
        print(f"end to end: {end_to_end:.1f} s, {len(ran)} stages ran", flush=True)
        dvc(trivial, "repro")
        runs = alternate(
            {"ours": lambda: dvc(ours, "repro"), "trivial": lambda: dvc(trivial, "repro")},
            args.repeats,
        )
        for name, side in runs.items():
            rerun = [stage for _, out in side for stage in ran_stages(out)]
            if rerun:
                raise RuntimeError(f"a second dvc repro of {name} ran {rerun}")
        noop = {name: [seconds for seconds, _ in side] for name, side in runs.items()}
        per_stage = stage_seconds(ours)
        metrics = json_files(ours / "reports" / "metrics")
        details = json_files(ours / "reports" / "runs")
        if args.keep is not None:  # e.g. for bench_classify --base KEEP/models/base
            shutil.copytree(ours, args.keep, symlinks=True, dirs_exist_ok=True)
    results: dict[str, Any] = {
        "machine": machine(),
        "quick": args.quick,
        "stages": len(stages),
        "end_to_end_s": end_to_end,
        "ran": ran,
        "stage_seconds": per_stage,
        "metrics": metrics,
        "details": details,
        "noop_s": median(noop["ours"]),
        "noop_samples": noop["ours"],
        "trivial_noop_s": median(noop["trivial"]),
        "trivial_noop_samples": noop["trivial"],
        "noop_ratio": median(noop["ours"]) / median(noop["trivial"]),
    }
    print(
        f"dvc repro with nothing to do: {results['noop_s']:.2f} s; a trivial DAG of the same "
        f"shape: {results['trivial_noop_s']:.2f} s ({results['noop_ratio']:.2f}x)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
