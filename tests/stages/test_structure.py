"""stages/ holds the ten DVC stages and nothing else: each module defines only `run` (the
plain function tests call), `command` (its thin Typer command) and private glue; and only the
CLI imports them, so library code never depends on a stage."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGE_FILES = sorted(p for p in (REPO / "stages").glob("*.py") if p.name != "__init__.py")


def top_level_names(tree: ast.Module) -> set[str]:
    """Names a module binds at its top level, imports excluded."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def test_there_are_the_ten_stages():
    assert len(STAGE_FILES) == 10, [p.name for p in STAGE_FILES]


@pytest.mark.parametrize("path", STAGE_FILES, ids=lambda p: p.stem)
def test_a_stage_module_defines_only_run_command_and_private_names(path):
    names = top_level_names(ast.parse(path.read_text()))
    assert {"run", "command"} <= names, path.name
    public = sorted(n for n in names - {"run", "command"} if not n.startswith("_"))
    assert not public, f"{path.name} defines {public}: library code belongs in gptpipe/"


def imports_stages(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module]
        else:
            continue
        if any(m == "gptpipe.stages" or m.startswith("gptpipe.stages.") for m in modules):
            return True
    return False


def test_only_the_cli_imports_the_stages():
    sources = [*(REPO / "gptpipe").rglob("*.py"), *STAGE_FILES, *(REPO / "benchmarks").glob("*.py")]
    importers = sorted(str(p.relative_to(REPO)) for p in sources if imports_stages(p))
    assert importers, "the CLI registers the stages"
    outside = [p for p in importers if not p.startswith("gptpipe/cli/")]
    assert not outside, f"only gptpipe/cli/ may import gptpipe.stages: {outside}"


def imports_the_cli(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("gptpipe.cli")
        ):
            return True
        if isinstance(node, ast.Import) and any(
            a.name.startswith("gptpipe.cli") for a in node.names
        ):
            return True
    return False


def test_arrows_run_one_way_the_cli_imports_the_stages_never_the_reverse():
    """What both need (the shared options, `section()`, the bad-input guard) lives below both,
    in gptpipe/options.py; no stage and no library module imports gptpipe.cli."""
    sources = [*(REPO / "gptpipe").rglob("*.py"), *STAGE_FILES]
    entry = REPO / "gptpipe" / "__main__.py"  # `python -m gptpipe`: the CLI's entry, above it
    below = [p for p in sources if "cli" not in p.relative_to(REPO).parts and p != entry]
    offenders = sorted(str(p.relative_to(REPO)) for p in below if imports_the_cli(p))
    assert not offenders, f"import gptpipe.cli from below it: {offenders}"
