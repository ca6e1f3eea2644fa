"""dvc.yaml's contract: every stage depends on the library code it runs, and only on its own params.

The library code a stage runs is the closure of project modules imported by its stage module;
listing it all in `deps` means a code change reruns exactly the stages it can affect.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC["stages"]
# Plumbing that cannot change what a stage writes: CLI defaults (dvc.yaml passes every path),
# option parsing, error messages and progress bars. Everything else a stage imports is a dep.
PLUMBING = {"default_paths.py", "options.py", "errors.py", "progress.py"}


def module_file(module: str) -> Path | None:
    """The source file of a project module name (gptpipe.stages.X lives in stages/X.py)."""
    parts = module.split(".")
    if parts[0] != "gptpipe":
        return None
    if parts[1:2] == ["stages"]:
        path = REPO / "stages" / Path(*parts[2:])
    else:
        path = REPO / "gptpipe" / Path(*parts[1:])
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def closure(start: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            found = module_file(name)
            if found is not None and found.name != "__init__.py" and not plumbing(found):
                todo.append(found)
    return seen


def plumbing(path: Path) -> bool:
    return (
        path.relative_to(REPO / "gptpipe").as_posix() in PLUMBING
        if "gptpipe" in path.parts
        else False
    )


def stage_module(cmd: str) -> Path:
    words = re.sub(r"\s+", " ", cmd).split(" ")
    assert words[0] == "gptpipe", cmd
    name = words[1] if words[1] != "finetune" else f"finetune_{words[2]}"
    return REPO / "stages" / f"{name}.py"


def files_read_beside(path: Path) -> set[Path]:
    """Source files a module reads from its own folder (`Path(__file__).with_name("x.cpp")`,
    as the cache kernel's C++ source): code the stage runs too, though never imported."""
    found = re.findall(r"""Path\(__file__\)\.with_name\(\s*["']([^"']+)["']""", path.read_text())
    return {path.with_name(name) for name in found}


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_deps_include_all_library_code_it_runs(name):
    stage = STAGES[name]
    deps = {REPO / d for d in stage["deps"] if not d.startswith("${")}
    modules = closure(stage_module(stage["cmd"]))
    needed = modules | {f for module in modules for f in files_read_beside(module)}
    missing = sorted(str(p.relative_to(REPO)) for p in needed - deps)
    assert not missing, f"stage {name} runs code not in its deps: {missing}"
    extra = sorted(str(p.relative_to(REPO)) for p in deps - needed if p.suffix == ".py")
    assert not extra, f"stage {name} lists code it does not run: {extra}"


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_reads_only_its_own_params_sections(name):
    module = stage_module(STAGES[name]["cmd"]).read_text()
    used = set(re.findall(r"""section\(\s*["'](\w+)["']""", module))
    # `base.source` in dvc.yaml: the stage reads one key of that section (and DVC tracks only it)
    assert used == {key.split(".")[0] for key in STAGES[name]["params"]}, name


@pytest.mark.parametrize(
    ("stage", "foreign"),
    [
        # the losses and the loop live in gptpipe/train/, fine-tuning's data code apart
        ("pretrain", ["finetune/*.py"]),
        # download needs only the end-of-text string (tokenizer/special.py), not the tokenizer
        ("download", ["tokenizer/folder.py", "tokenizer/bpe.py"]),
    ],
)
def test_editing_code_a_stage_does_not_run_does_not_rerun_it(stage, foreign):
    """DVC reruns a stage when one of its deps changes: fine-tuning-only code is neither in
    pretrain's import closure nor in its deps, nor tokenizer code in download's."""
    files = {p for pattern in foreign for p in (REPO / "gptpipe").glob(pattern)}
    assert files, foreign  # the patterns name real files
    deps = {REPO / d for d in STAGES[stage]["deps"] if not d.startswith("${")}
    needed = closure(stage_module(STAGES[stage]["cmd"]))
    assert not files & needed, sorted(str(p.relative_to(REPO)) for p in files & needed)
    assert not files & deps, sorted(str(p.relative_to(REPO)) for p in files & deps)


def _declared_outputs() -> set[str]:
    """Every path a stage writes (outs, metrics, plots), with dvc.yaml's ${paths.x} resolved."""
    paths = DVC["vars"][0]["paths"]
    resolve = lambda text: re.sub(r"\$\{paths\.(\w+)\}", lambda m: paths[m.group(1)], text)  # noqa: E731
    found = set()
    for stage in STAGES.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                found.add(resolve(next(iter(entry)) if isinstance(entry, dict) else entry))
    return found


def test_no_stage_output_is_tracked_by_git():
    """DVC refuses to write an output git tracks ("already tracked by SCM"), so one committed
    by mistake breaks `dvc repro` in every fresh clone, at that stage."""
    import subprocess

    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    outputs = _declared_outputs()
    assert "reports/classify/scores.json" in outputs and len(outputs) > 10
    clashes = [f for f in tracked for out in outputs if f == out or f.startswith(out + "/")]
    assert clashes == []


def test_the_committed_gitignores_list_exactly_the_stage_outputs():
    """DVC adds each output it caches to a .gitignore beside it; the committed ones already
    list them all (and nothing stale), so `make run` in a fresh clone leaves git clean but for
    dvc.lock."""
    import subprocess

    outputs = _declared_outputs()
    listed = set()
    tracked = subprocess.run(
        ["git", "ls-files", "*.gitignore"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for name in tracked:
        folder = Path(name).parent
        if folder.parts[:1] not in (("data",), ("models",), ("reports",)):
            continue
        for line in (REPO / name).read_text().splitlines():
            if line.startswith("/"):
                listed.add((folder / line.lstrip("/")).as_posix())
    assert "reports/classify/scores.json" in outputs
    assert listed == outputs
