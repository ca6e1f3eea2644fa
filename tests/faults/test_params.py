"""Bad params through the command line: malformed params.yaml, unknown keys, wrong types,
values that make no sense, sizes that cannot fit (refused before allocating), `-S` syntax
errors and usage errors. Every row: exit 2, one line naming the key or file, no traceback."""

from __future__ import annotations

import time

import pytest
from helpers.faults import cli, expect_bad_input

# (case id, command, params.yaml text, fragments the one line must hold)
PARAMS_FILES = [
    ("bad-yaml", "pretrain", "model: [1, 2\n", ["params.yaml", "not valid YAML"]),
    ("top-level-list", "pretrain", "- model\n- pretrain\n", ["params.yaml", "mapping of sections"]),
    ("top-level-string", "pretrain", "just some text\n", ["params.yaml", "mapping of sections"]),
    ("section-is-list", "pretrain", "model: [1, 2]\n", ["'model'", "must be a mapping"]),
    ("section-is-string", "pretrain", "pretrain: fast\n", ["'pretrain'", "must be a mapping"]),
    ("misspelt-section", "pretrain", "pretrian:\n  max_steps: 3\n", ["'pretrian'", "pretrain"]),
    ("unknown-key", "pretrain", "model:\n  n_layers: 2\n", ["model.n_layers", "unknown key"]),
    ("string-for-int", "pretrain", "model:\n  n_layer: '4'\n", ["model.n_layer", "integer"]),
    ("bool-for-int", "pretrain", "pretrain:\n  max_steps: true\n", ["pretrain.max_steps"]),
    ("float-for-int", "pretrain", "pretrain:\n  batch_size: 2.5\n", ["pretrain.batch_size"]),
    ("list-for-float", "pretrain", "pretrain:\n  learning_rate: [1]\n", ["pretrain.learning_rate"]),
    ("nan", "pretrain", "pretrain:\n  learning_rate: .nan\n", ["pretrain.learning_rate", "finite"]),
    ("inf", "pretrain", "pretrain:\n  grad_clip: .inf\n", ["pretrain.grad_clip", "finite"]),
    ("huge-int-float", "pretrain", f"pretrain:\n  min_lr: {10**400}\n", ["pretrain.min_lr"]),
    ("negative", "pretrain", "pretrain:\n  warmup_steps: -1\n", ["pretrain.warmup_steps", ">= 0"]),
    ("zero-heads", "pretrain", "model:\n  n_head: 0\n", ["model.n_head", ">= 1"]),
    ("eps-zero", "pretrain", "pretrain:\n  eps: 0\n", ["pretrain.eps", "(0, 1)"]),
    ("zero-steps", "pretrain", "pretrain:\n  max_steps: 0\n", ["pretrain.max_steps"]),
    ("dropout-one", "pretrain", "model:\n  dropout: 1.0\n", ["model.dropout"]),
    ("val-fraction-zero", "shard", "shard:\n  val_fraction: 0\n", ["shard.val_fraction"]),
    ("impossible-shape", "pretrain", "model:\n  n_embd: 30\n  n_head: 4\n", ["model.n_embd"]),
    ("seed-too-large", "pretrain", f"pretrain:\n  seed: {2**64}\n", ["pretrain.seed"]),
    ("seed-negative", "sample", "sample:\n  seed: -5\n", ["sample.seed"]),
    ("device-torch-rejects", "pretrain", "pretrain:\n  device: 'cuda:x'\n", ["pretrain.device"]),
    ("device-unknown", "evaluate", "evaluate:\n  device: gpu\n", ["evaluate.device"]),
    ("tiny-temperature", "sample", "sample:\n  temperature: 1.0e-40\n", ["sample.temperature"]),
    ("tokenizer-vocab-too-small", "tokenizer", "tokenizer:\n  vocab_size: 100\n", ["vocab_size"]),
    ("tokenizer-vocab-absurd", "tokenizer", "tokenizer:\n  vocab_size: 99999999\n", ["vocab_size"]),
    ("data-empty-list", "download", "data:\n  corpus: []\n", ["data.corpus"]),
    ("width-of-a-million", "pretrain", "model:\n  n_embd: 1000000\n", ["model.n_embd"]),
    ("depth-of-a-million", "pretrain", "model:\n  n_layer: 1000000\n", ["model.n_layer"]),
    (
        "model-over-memory",
        "pretrain",
        "model:\n  n_embd: 131072\n  n_head: 1\n  n_layer: 9000\n",
        ["'model'", "needs about", "PiB"],
    ),
    (
        "shard-buffer-1e13",
        "shard",
        "shard:\n  shard_tokens: 10000000000000\n",
        ["shard.shard_tokens", "needs about"],
    ),
    (
        "batch-absurd",
        "pretrain",
        "pretrain:\n  batch_size: 100000000000\n",
        ["pretrain.batch_size"],
    ),
]


@pytest.mark.parametrize(
    ("command", "text", "fragments"),
    [row[1:] for row in PARAMS_FILES],
    ids=[row[0] for row in PARAMS_FILES],
)
def test_bad_params_file(tmp_path, command, text, fragments):
    params = tmp_path / "params.yaml"
    params.write_text(text, encoding="utf-8")
    started = time.perf_counter()
    result = cli([command, "--params", params], cwd=tmp_path)
    expect_bad_input(result, *fragments)
    assert time.perf_counter() - started < 1.0  # refused before allocating anything
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


RAW_FILES = [
    ("non-utf8", b"pretrain:\n  max_steps: 3\n  # caf\xe9\n", ["params.yaml", "UTF-8"]),
    ("binary", bytes(range(256)) * 4, ["params.yaml"]),
    ("nested-absurdly", b"a: " + b"[" * 50_000 + b"\n", ["params.yaml", "nested too deeply"]),
]


@pytest.mark.parametrize(
    ("data", "fragments"), [r[1:] for r in RAW_FILES], ids=[r[0] for r in RAW_FILES]
)
def test_unreadable_params_file(tmp_path, data, fragments):
    params = tmp_path / "params.yaml"
    params.write_bytes(data)
    expect_bad_input(cli(["pretrain", "--params", params], cwd=tmp_path), *fragments)


def test_params_path_is_a_folder(tmp_path):
    expect_bad_input(cli(["pretrain", "--params", tmp_path], cwd=tmp_path), str(tmp_path))


def test_params_file_missing(tmp_path):
    expect_bad_input(cli(["pretrain", "--params", tmp_path / "p.yaml"]), "p.yaml", "not found")


# (case id, -S arguments, fragments)
OVERRIDES = [
    ("no-equals", ["-S", "pretrain.max_steps"], ["pretrain.max_steps", "SECTION.KEY=VALUE"]),
    ("no-dot", ["-S", "pretrain=3"], ["pretrain=3", "SECTION.KEY=VALUE"]),
    ("unknown-section", ["-S", "pretrian.max_steps=3"], ["pretrian", "unknown section"]),
    ("unknown-key", ["-S", "pretrain.max_step=3"], ["pretrain.max_step", "unknown key"]),
    ("unclosed-list", ["-S", "model.n_layer=[1,2"], ["model.n_layer", "integer"]),
    ("empty-value", ["-S", "model.n_layer="], ["model.n_layer", "integer"]),
    ("nested-value", ["-S", "pretrain.seed=" + "[" * 50_000], ["pretrain.seed", "nested"]),
    ("nan-override", ["-S", "pretrain.learning_rate=nan"], ["pretrain.learning_rate"]),
]


@pytest.mark.parametrize(
    "args, fragments", [r[1:] for r in OVERRIDES], ids=[r[0] for r in OVERRIDES]
)
def test_bad_override(tmp_path, args, fragments):
    expect_bad_input(cli(["pretrain", "--params", "params.yaml", *args], tmp_path), *fragments)


# Typer's own usage errors: one line, not a box.
USAGE = [
    ("unknown-option", ["pretrain", "--bogus"], ["--bogus", "gptpipe pretrain --help"]),
    ("unknown-command", ["pretrian"], ["pretrian", "gptpipe --help"]),
    ("missing-value", ["pretrain", "--checkpoints"], ["--checkpoints"]),
    ("unknown-subcommand", ["finetune", "instrct"], ["instrct"]),
]


@pytest.mark.parametrize("args, fragments", [r[1:] for r in USAGE], ids=[r[0] for r in USAGE])
def test_usage_error_is_one_line(tmp_path, args, fragments):
    expect_bad_input(cli(args, tmp_path), *fragments)
