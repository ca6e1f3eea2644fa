"""The command line as a whole: every stage is a command, shared options, exit statuses."""

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gptpipe import default_paths
from gptpipe.cli.app import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()

STAGE_COMMANDS = [
    ["download"],
    ["tokenizer"],
    ["shard"],
    ["pretrain"],
    ["weights"],
    ["finetune", "instruct"],
    ["finetune", "classify"],
    ["evaluate"],
    ["sample"],
    ["report"],
]


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_help_lists_one_command_per_stage_plus_generate_and_info():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in (
        "download",
        "tokenizer",
        "shard",
        "pretrain",
        "weights",
        "finetune",
        "evaluate",
        "sample",
        "report",
        "generate",
        "info",
    ):
        assert re.search(rf"\b{name}\b", plain(result.output)), name
    result = runner.invoke(app, ["finetune", "--help"])
    assert "instruct" in plain(result.output) and "classify" in plain(result.output)


@pytest.mark.parametrize("command", STAGE_COMMANDS, ids=" ".join)
def test_every_stage_takes_params_and_set_and_documents_its_keys(command):
    result = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = plain(result.output)
    assert "--params" in text and "--set" in text and "-S" in text
    assert "Params section" in text


@pytest.mark.parametrize("command", STAGE_COMMANDS, ids=" ".join)
def test_unknown_override_key_exits_2_with_one_line(command, tmp_path):
    result = runner.invoke(app, [*command, "-S", "model.nosuchkey=1"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model.nosuchkey" in lines[0]


def test_missing_params_file_exits_2_naming_it(tmp_path):
    result = runner.invoke(app, ["tokenizer", "--params", str(tmp_path / "p.yaml")])
    assert result.exit_code == 2
    assert "p.yaml" in result.stderr


def test_dvc_yaml_passes_the_same_paths_as_the_command_defaults():
    paths = yaml.safe_load((REPO / "dvc.yaml").read_text())["vars"][0]["paths"]
    expected = {
        "raw": default_paths.RAW,
        "corpus": default_paths.CORPUS,
        "instruct_data": default_paths.INSTRUCT_DATA,
        "classify_data": default_paths.CLASSIFY_DATA,
        "tokenizer": default_paths.TOKENIZER,
        "shards": default_paths.SHARDS,
        "pretrain": default_paths.PRETRAIN,
        "base": default_paths.BASE,
        "instruct": default_paths.INSTRUCT_MODEL,
        "classify": default_paths.CLASSIFY_MODEL,
        "metrics": default_paths.METRICS,
        "plots": default_paths.PLOTS,
        "samples": default_paths.SAMPLES,
        "attention": default_paths.ATTENTION,
        "report": default_paths.REPORT,
        "figures": default_paths.FIGURES,
        "checkpoints": default_paths.CHECKPOINTS,
    }
    for key, path in expected.items():
        assert Path(paths[key]) == path, key
