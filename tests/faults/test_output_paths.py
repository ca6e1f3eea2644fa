"""Nothing a user types can delete their work: every command that writes refuses, before it
writes anything, an output path that would replace what the user did not mean to replace.

A table of commands (each with the options that name its outputs and inputs) times a table of
dangerous places for one of its outputs: the working directory and the folder above it, an
input or a folder holding one, a place inside an input folder, another output's path or a
folder holding it, a folder of the user's own files, a file where a folder goes, a folder
where a file goes, the params file. Every case is exit 2 with one line naming the option and
the path, and not a byte of the workspace changes. The same paths with `--force` (where a
command documents it) are refused for every reason but a folder of other files.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.faults import cli, expect_bad_input

from gptpipe.errors import BadInput
from gptpipe.fsutil import staged_outputs
from gptpipe.outputs import FILE, Output, check_paths, folder_kind

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Command:
    """A command line: its words, its outputs and its inputs ({option: path in the
    workspace}), which outputs are folders, and whether it documents --force."""

    words: tuple[str, ...]
    outputs: dict[str, str]
    inputs: dict[str, str]
    folders: frozenset[str] = frozenset()
    positional: tuple[str, ...] = ()  # options given as positional arguments, in order
    force: bool = False
    extra: tuple[str, ...] = field(default=())

    def argv(self, changed: dict[str, str]) -> list[str]:
        paths = {**self.inputs, **self.outputs, **changed}
        args = list(self.words)
        args += [paths[name] for name in self.positional]
        for name, value in paths.items():
            if name not in self.positional and name != "--params":
                args += [name, value]
        if "--params" in self.inputs:
            args += ["--params", paths["--params"]]
        return [*args, *self.extra]


TRAINING = {
    "--out": "new/model",
    "--metrics": "new/metrics.json",
    "--plots": "new/plots",
    "--checkpoints": "new/ckpt",
    "--details": "new/run.json",
}
TRAINING_FOLDERS = frozenset({"--out", "--plots", "--checkpoints"})
COMMANDS = {
    "download": Command(
        ("download",),
        {"--out": "new/raw", "--details": "new/run.json"},
        {"--params": "params.yaml"},
        frozenset({"--out"}),
        extra=("-S", "data.corpus=in/corpus.txt", "-S", "data.inputs=in"),
    ),
    "tokenizer": Command(
        ("tokenizer",),
        {"--out": "new/tok", "--details": "new/run.json"},
        {"--params": "params.yaml", "--corpus": "in/corpus.txt"},
        frozenset({"--out"}),
    ),
    "shard": Command(
        ("shard",),
        {"--out": "new/shards", "--details": "new/run.json"},
        {"--params": "params.yaml", "--corpus": "in/corpus.txt", "--tokenizer": "models/tok"},
        frozenset({"--out"}),
    ),
    "pretrain": Command(
        ("pretrain",),
        TRAINING,
        {"--params": "params.yaml", "--shards": "data/shards", "--tokenizer": "models/tok"},
        TRAINING_FOLDERS,
    ),
    "weights": Command(
        ("weights",),
        {"--out": "new/base", "--details": "new/run.json"},
        {"--params": "params.yaml", "--pretrained": "models/base", "--tokenizer": "models/tok"},
        frozenset({"--out"}),
    ),
    "finetune instruct": Command(
        ("finetune", "instruct"),
        {**TRAINING, "--responses": "new/responses.json"},
        {"--params": "params.yaml", "--base": "models/base", "--data": "in/instruct.json"},
        TRAINING_FOLDERS,
    ),
    "finetune classify": Command(
        ("finetune", "classify"),
        {**TRAINING, "--scores": "new/scores.json"},
        {"--params": "params.yaml", "--base": "models/base", "--data": "in/labels.tsv"},
        TRAINING_FOLDERS,
    ),
    "evaluate": Command(
        ("evaluate",),
        {"--out": "new/evaluate.json", "--details": "new/run.json"},
        {"--params": "params.yaml", "--shards": "data/shards", "--model": "models/base"},
    ),
    "sample": Command(
        ("sample",),
        {"--out": "new/samples", "--attention": "new/attention", "--details": "new/run.json"},
        {"--params": "params.yaml", "--model": "models/base"},
        frozenset({"--out", "--attention"}),
    ),
    "report": Command(
        ("report",),
        {"--out": "new/report.md", "--figures": "new/figures"},
        {
            "--params": "params.yaml",
            "--metrics": "reports/metrics",
            "--runs": "reports/runs",
            "--model": "models/base",
        },
        frozenset({"--figures"}),
    ),
    "attention": Command(
        ("attention",),
        {"--out": "new/attention"},
        {"--model": "models/base"},
        frozenset({"--out"}),
        force=True,
        extra=("--text", "The cat"),
    ),
    "export": Command(
        ("export",),
        {"OUT_DIR": "new/export"},
        {"MODEL_DIR": "models/base"},
        frozenset({"OUT_DIR"}),
        positional=("MODEL_DIR", "OUT_DIR"),
        force=True,
    ),
}


def _first_folder_input(command: Command) -> str | None:
    folders = ("models/base", "models/tok", "data/shards", "reports/metrics", "reports/runs")
    return next((o for o, p in command.inputs.items() if p in folders), None)


def _first_file_input(command: Command) -> str | None:
    return next((o for o, p in command.inputs.items() if p.startswith("in/")), None)


# Dangerous places for one output: (case name, how to pick the output and the value, the
# words the one line must hold; None where the command has no such place).
Place = Callable[[Command], tuple[str, str, tuple[str, ...]] | None]


def _main(command: Command) -> str:
    return next(iter(command.outputs))


def _main_folder(command: Command) -> str | None:
    return next((o for o in command.outputs if o in command.folders), None)


def _main_file(command: Command) -> str | None:
    return next((o for o in command.outputs if o not in command.folders), None)


def _input(command: Command) -> tuple[str, str, tuple[str, ...]] | None:
    option = _first_file_input(command) or _first_folder_input(command)
    if option is None:
        return None
    return _main(command), command.inputs[option], (option, "an input of this command")


def _folder_holding_an_input(command: Command) -> tuple[str, str, tuple[str, ...]] | None:
    option = _first_file_input(command) or _first_folder_input(command)
    if option is None:
        return None
    parent = str(Path(command.inputs[option]).parent)
    return _main(command), parent, ("holds", option, "an input of this command")


def _inside_an_input_folder(command: Command) -> tuple[str, str, tuple[str, ...]] | None:
    option = _first_folder_input(command)
    if option is None:
        return None
    inside = f"{command.inputs[option]}/sub"
    return _main(command), inside, ("inside", option, "an input folder")


def _another_output(command: Command) -> tuple[str, str, tuple[str, ...]] | None:
    if len(command.outputs) < 2:
        return None
    first, second = list(command.outputs)[:2]
    return second, command.outputs[first], ("the same path as", first)


def _folder_holding_another_output(command: Command) -> tuple[str, str, tuple[str, ...]] | None:
    folder = _main_folder(command)
    others = [o for o in command.outputs if o != folder]
    if folder is None or not others:
        return None
    return folder, "new", ("holds", others[0], "another output")


def _params_file(command: Command) -> tuple[str, str, tuple[str, ...]] | None:
    if "--params" not in command.inputs:
        return None
    option = _main_file(command) or _main(command)
    return option, "params.yaml", ("--params", "an input of this command")


PLACES: dict[str, Place] = {
    "the working directory": lambda c: (_main(c), ".", ("the working directory",)),
    "the folder above it": lambda c: (_main(c), "..", ("a folder above the working one",)),
    "an absolute working directory": lambda c: (_main(c), "{cwd}", ("the working directory",)),
    "an input": _input,
    "a folder holding an input": _folder_holding_an_input,
    "inside an input folder": _inside_an_input_folder,
    "another output's path": _another_output,
    "a folder holding another output": _folder_holding_another_output,
    "the params file": _params_file,
    "a folder of the user's files": lambda c: (
        (o, "mine", ("a folder that is not a", "notes.txt")) if (o := _main_folder(c)) else None
    ),
    "a file where a folder goes": lambda c: (
        (o, "mine/notes.txt", ("a file, where a",)) if (o := _main_folder(c)) else None
    ),
    "a folder where a file goes": lambda c: (
        (o, "mine", ("a folder, where a file goes",)) if (o := _main_file(c)) else None
    ),
}

CASES = [
    pytest.param(command, place, id=f"{command}: {place}")
    for command in COMMANDS
    for place in PLACES
    if PLACES[place](COMMANDS[command]) is not None
]


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` with a digest of its bytes (folders as '/')."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        found[rel] = "/" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A project folder: params, input files and folders, and a folder of the user's own
    files. The checks run before any input is read, so the inputs need only exist."""
    work = tmp_path / "work"
    for name, text in {
        "params.yaml": (REPO / "params.yaml").read_text(),
        "in/corpus.txt": "Some text.\n",
        "in/instruct.json": "[]",
        "in/labels.tsv": "a\tb\n",
        "models/base/config.json": "{}",
        "models/base/model.safetensors": "",
        "models/tok/tokenizer.json": "{}",
        "data/shards/manifest.json": "{}",
        "reports/metrics/pretrain.json": "{}",
        "reports/runs/pretrain.json": "{}",
        "mine/notes.txt": "a week of notes",
        "mine/thesis/chapter1.tex": "\\chapter{One}",
    }.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    (tmp_path / "beside.txt").write_text("a file beside the working directory")
    return work


@pytest.mark.parametrize(("command", "place"), CASES)
def test_a_dangerous_output_path_is_refused_and_nothing_changes(workspace, command, place):
    spec = COMMANDS[command]
    picked = PLACES[place](spec)
    assert picked is not None
    option, value, words = picked
    value = value.replace("{cwd}", str(workspace))
    before = snapshot(workspace.parent)
    result = cli(spec.argv({option: value}), cwd=workspace)
    line = expect_bad_input(result, option, value, *words)
    assert "force" not in line or spec.force, line
    assert snapshot(workspace.parent) == before


@pytest.mark.parametrize(
    ("command", "place"),
    [
        (c, p)
        for c, spec in COMMANDS.items()
        if spec.force
        for p in PLACES
        if PLACES[p](spec) is not None and p != "a folder of the user's files"
    ],
)
def test_force_replaces_only_a_folder_of_other_files(workspace, command, place):
    """--force is documented for the commands that write wherever the user says (attention,
    export): it lets them replace a folder of other files, and nothing else."""
    spec = COMMANDS[command]
    option, value, words = PLACES[place](spec) or ("", "", ())
    value = value.replace("{cwd}", str(workspace))
    before = snapshot(workspace.parent)
    result = cli([*spec.argv({option: value}), "--force"], cwd=workspace)
    expect_bad_input(result, option, value, *words)
    assert snapshot(workspace.parent) == before


@pytest.mark.parametrize("command", [c for c, spec in COMMANDS.items() if spec.force])
def test_a_folder_of_other_files_names_force_where_it_is_documented(workspace, command):
    spec = COMMANDS[command]
    option = _main_folder(spec)
    assert option is not None
    result = cli(spec.argv({option: "mine"}), cwd=workspace)
    expect_bad_input(result, option, "mine", "give --force to replace it")


def test_previous_outputs_of_the_same_kind_are_recognised(tmp_path, monkeypatch):
    """What may be replaced: an empty folder, one holding the files of its kind (any of the
    kind's sets), one of only the kind's suffix; a file output over a file."""
    monkeypatch.chdir(tmp_path)
    model = folder_kind("model folder", {"model.safetensors", "config.json"}, {"skipped.json"})
    figures = folder_kind("figures folder", only_suffix=".png")
    for name, files in {
        "empty": [],
        "model": ["model.safetensors", "config.json", "tokenizer.json"],
        "skipped": ["skipped.json"],
        "pngs": ["a.png", "b.png"],
    }.items():
        (tmp_path / name).mkdir()
        for file in files:
            (tmp_path / name / file).write_text("x")
    (tmp_path / "old.json").write_text("{}")
    check_paths([Output("--out", Path("empty"), model), Output("--x", Path("model"), model)])
    check_paths([Output("--out", Path("skipped"), model), Output("--f", Path("pngs"), figures)])
    check_paths([Output("--metrics", Path("old.json"), FILE)])
    for option, path, kind, words in (
        ("--out", "pngs", model, "not a model folder (it holds a.png, b.png)"),
        ("--f", "model", figures, "not a figures folder"),
        ("--f", "half", model, "not a model folder"),
    ):
        (tmp_path / "half").mkdir(exist_ok=True)
        (tmp_path / "half" / "config.json").write_text("{}")  # weights missing: not one
        with pytest.raises(BadInput, match=re.escape(words)):
            check_paths([Output(option, Path(path), kind)])


@pytest.mark.parametrize("target", [".", "..", "{cwd}", "{parent}"])
def test_the_mechanism_that_replaces_outputs_never_replaces_the_working_directory(
    tmp_path, monkeypatch, target
):
    """Whoever calls it (a library function, a test, a benchmark), staged_outputs refuses the
    working directory and the folders above it before anything is written."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("kept")
    monkeypatch.chdir(work)
    path = Path(target.replace("{cwd}", str(work)).replace("{parent}", str(tmp_path)))
    before = snapshot(tmp_path)
    with pytest.raises(BadInput, match="working"), staged_outputs(path) as (staged,):
        staged.mkdir()
    assert snapshot(tmp_path) == before


def test_two_outputs_of_one_commit_neither_share_a_path_nor_nest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for pair, words in (
        (("a", "a"), "the same path as output"),
        (("a", "a/b"), "holds output a/b"),
        (("a/b", "a"), "holds output a/b"),
    ):
        with pytest.raises(BadInput, match=words), staged_outputs(*pair):
            pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["export", "--format", "hf", "models/base", "models/base"], "is MODEL_DIR models/base"),
        (["export", "models/base", "models"], "holds MODEL_DIR models/base"),
        (["export", "models/base", "{cwd}"], "the working directory"),
        (["tokenizer", "--out", "{cwd}"], "the working directory"),
        (["tokenizer", "--out", "data"], "holds --corpus data/raw/corpus.txt"),
        (["report", "--figures", "reports"], "holds --metrics reports/metrics"),
        (["pretrain", "--out", "x", "--plots", "x"], "the same path as --out"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_the_hostile_passes_own_examples_are_refused(tmp_path, argv, words):
    """The commands that deleted work with exit status 0, with the default layout's paths."""
    work = tmp_path / "work"
    for name in ("models/base/config.json", "models/base/model.safetensors",
                 "data/raw/corpus.txt", "reports/metrics/pretrain.json"):  # fmt: skip
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text("{}")
    (work / "params.yaml").write_text((REPO / "params.yaml").read_text())
    before = snapshot(tmp_path)
    result = cli([a.replace("{cwd}", str(work)) for a in argv], cwd=work)
    expect_bad_input(result, words)
    assert snapshot(tmp_path) == before
