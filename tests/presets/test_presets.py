"""Presets: each seed system's params load and validate, `gptpipe preset` prints, writes and
lists them and prints the `dvc exp run` line, and every preset runs end to end at a tiny size
(its own structure, with steps and widths overridden by -S)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.mirror import MIRROR, needs_mirror
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.config import SECTIONS, parse_override
from gptpipe.interop import hub
from gptpipe.presets import Preset, apply_to_text, check_params, load_preset, preset_names

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
# Keys that sibling branches add (LoRA fine-tuning, nucleus sampling): the presets set them
# already; where this checkout's config lacks them they are left out of the checks.
PENDING: set[tuple[str, str]] = set()  # keys a preset may set before the config has them


def known(preset: Preset) -> dict[str, dict[str, Any]]:
    """The preset's params, without pending keys this checkout's config does not have."""
    names = {s: {f.name for f in dataclasses.fields(c)} for s, c in SECTIONS.items()}
    return {
        section: {
            k: v
            for k, v in values.items()
            if (section, k) not in PENDING or k in names.get(section, set())
        }
        for section, values in preset.params.items()
    }


def test_one_preset_per_seed_system_and_each_validates():
    seeds = sorted(p.name[:3] for p in (REPO.parent.parent / "shared" / "seeds").glob("*.txt"))
    assert preset_names() == ["seed000", "seed001", "seed002", "seed003", "seed004"]
    if seeds:
        assert [f"seed{s}" for s in seeds] == preset_names()
    for name in preset_names():
        preset = load_preset(name)
        assert preset.description and preset.reproduces.startswith(name[4:])
        check_params(known(preset))


def test_presets_have_their_seed_systems_shape():
    p = {name: load_preset(name).params for name in preset_names()}
    assert p["seed000"]["tokenizer"] == {"kind": "word", "vocab_size": 1150}
    assert p["seed000"]["data"]["corpus"] == "stdlib"
    m = p["seed000"]["model"]
    assert (m["n_layer"], m["n_head"], m["n_embd"], m["block_size"]) == (1, 4, 512, 56)
    assert p["seed000"]["sample"]["temperature"] == 0.0  # greedy; stops at <|endoftext|>
    for name in ("seed001", "seed002"):
        m = p[name]["model"]
        assert p[name]["tokenizer"]["kind"] == "gpt2"
        assert p[name]["data"]["corpus"] == "tinyshakespeare"
        assert (m["n_layer"], m["n_head"], m["n_embd"], m["block_size"]) == (4, 4, 128, 256)
    assert p["seed001"]["pretrain"]["checkpoint_interval"] > 0
    assert p["seed001"]["tokenizer"]["min_count"] >= 1  # GPT-2's tokens the corpus uses
    assert p["seed002"]["tokenizer"].get("min_count", 0) == 0  # all of GPT-2's
    assert p["seed002"]["instruct"]["trainable"] == "lora"
    decoding = p["seed002"]["sample"]["decoding"]
    assert any(d.get("top_p", 1) < 1 for d in decoding) and p["seed002"]["sample"]["top_k"] > 0
    m = p["seed003"]["model"]
    assert p["seed003"]["tokenizer"]["kind"] == "char"
    assert (m["n_layer"], m["n_head"], m["n_embd"], m["block_size"]) == (4, 4, 128, 64)
    assert p["seed003"]["pretrain"]["max_steps"] == 1600 and m["dropout"] == 0.0
    assert p["seed004"]["base"]["source"] == "gpt2"
    assert p["seed004"]["tokenizer"]["kind"] == "gpt2"
    assert p["seed004"]["data"]["instruct"] == "alpaca-instructions"
    assert p["seed004"]["data"]["classify"] == "sms-spam"


def test_cli_lists_prints_and_refuses_unknown_names():
    result = runner.invoke(app, ["preset", "--list"])
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.stdout.splitlines()] == preset_names()
    result = runner.invoke(app, ["preset", "seed003"])
    assert result.exit_code == 0
    printed = yaml.safe_load(result.stdout)
    assert printed == load_preset("seed003").params
    result = runner.invoke(app, ["preset", "seed9"])
    assert result.exit_code == 2 and "seed9" in result.stderr and "seed000" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--write" in runner.invoke(app, ["preset", "--help"]).stdout


def test_list_prints_one_short_line_per_preset():
    """`--list` promises one line each: the name and a summary of its description that fits a
    terminal of 100 columns (the whole description is in `gptpipe preset NAME`)."""
    result = runner.invoke(app, ["preset", "--list"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == len(preset_names())
    for name, line in zip(preset_names(), lines, strict=True):
        assert line.startswith(f"{name}  ") and len(line) <= 100, line
        summary = line.removeprefix(f"{name}  ")
        assert len(summary) > 40 and summary.split()[0] == load_preset(name).description.split()[0]


def test_write_sets_the_presets_keys_and_keeps_the_rest_with_comments(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    before = yaml.safe_load(params.read_text())
    result = runner.invoke(app, ["preset", "seed003", "--write", "--params", str(params)])
    assert result.exit_code == 0, result.output
    text = params.read_text()
    after = yaml.safe_load(text)
    preset = load_preset("seed003")
    for section, values in after.items():
        for key, value in values.items():
            expected = preset.params.get(section, {}).get(key, before[section].get(key))
            assert value == expected, f"{section}.{key}"
    assert set(after) == set(before)
    # comments stay, on the lines they were on
    assert "  kind: char              # bpe (trained on the corpus)" in text
    assert text.count("#") == (REPO / "params.yaml").read_text().count("#")
    # a missing params file is created with the preset's keys only
    fresh = tmp_path / "new.yaml"
    assert (
        runner.invoke(app, ["preset", "seed001", "--write", "--params", str(fresh)]).exit_code == 0
    )
    assert yaml.safe_load(fresh.read_text()) == load_preset("seed001").params


def test_write_refuses_params_that_do_not_validate_and_leaves_the_file(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("model:\n  n_head: 5  # 128 is not divisible by 5\n")
    result = runner.invoke(app, ["preset", "seed004", "--write", "--params", str(params)])
    assert result.exit_code == 2 and "model.n_embd" in result.stderr
    assert params.read_text() == "model:\n  n_head: 5  # 128 is not divisible by 5\n"


def test_apply_adds_new_keys_and_sections_in_place():
    text = "data:\n  corpus: stdlib  # where\n\nmodel:\n  n_layer: 2\n"
    preset = Preset("x", "d", "", {"model": {"n_layer": 4, "dropout": 0.1}, "sample": {"top_k": 5}})
    out = apply_to_text(text, preset)
    assert out == (
        "data:\n  corpus: stdlib  # where\n\nmodel:\n  n_layer: 4\n  dropout: 0.1\n"
        "sample:\n  top_k: 5\n"
    )


@pytest.mark.parametrize("name", ["seed002", "seed003"])
def test_dvc_line_sets_what_write_sets(tmp_path, name):
    """dvc exp run -S parses its overrides with hydra: applied to params.yaml they give the
    same params as --write."""
    hydra = pytest.importorskip("dvc.utils.hydra")
    result = runner.invoke(app, ["preset", name, "--dvc"])
    assert result.exit_code == 0
    import shlex

    words = shlex.split(result.stdout)
    assert words[:3] == ["dvc", "exp", "run"]
    overrides = [w for i, w in enumerate(words) if i and words[i - 1] == "-S"]
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    shutil.copy(REPO / "params.yaml", a)
    shutil.copy(REPO / "params.yaml", b)
    hydra.apply_overrides(str(a), overrides)
    b.write_text(apply_to_text(b.read_text(), load_preset(name)))
    assert yaml.safe_load(a.read_text()) == yaml.safe_load(b.read_text())


# --------------------------------------------------------------------------- end to end

TINY = [
    "model.n_embd=16",
    "pretrain.max_steps=3",
    "pretrain.batch_size=2",
    "pretrain.eval_interval=3",
    "pretrain.eval_batches=1",
    "pretrain.checkpoint_interval=0",
    "pretrain.threads=1",
    "pretrain.patience=0",
    *(
        f"{s}.{k}={v}"
        for s in ("instruct", "classify")
        for k, v in [("max_steps", 2), ("batch_size", 2), ("eval_interval", 2)]
    ),
    "classify.epochs=0",  # max_steps sets the length (one of the two does)
    "instruct.eval_batches=1",
    "instruct.max_new_tokens=2",
    "classify.eval_batches=1",
    "sample.max_new_tokens=4",
    "sample.num_samples=1",
]


CORPUS_BYTES = 100_000  # the corpora are cut to this, at a line end
RECORDS = 300  # and the instruction and classification sets to this many records


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict[str, Path]:
    """The data sets the presets name, through the download stage from the mirror: {source
    name: file}. The offline `stdlib` sets (their builder is tested in tests/sources and
    costs seconds) are stood in for by the mirror's: a document corpus of Alpaca responses
    (separated by <|endoftext|> lines), the Alpaca instructions and the SMS spam set."""
    root = tmp_path_factory.mktemp("raw")
    params = root / "params.yaml"
    data = {"corpus": "tinyshakespeare", "instruct": "alpaca-instructions", "classify": "sms-spam"}
    params.write_text(yaml.safe_dump({"data": data | {"mirror": str(MIRROR)}}))
    out = root / "data"
    result = runner.invoke(app, ["download", "--params", str(params), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "corpus.txt").read_text(encoding="utf-8")
    (out / "corpus.txt").write_text(text[: text.rindex("\n", 0, CORPUS_BYTES) + 1])
    records = json.loads((out / "instruct.json").read_text(encoding="utf-8"))
    documents = [r["output"] for r in records if r["output"].strip()]
    (out / "instruct.json").write_text(json.dumps(records[:RECORDS]), encoding="utf-8")
    lines = (out / "classify.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (out / "classify.tsv").write_text("".join(lines[:RECORDS]), encoding="utf-8")
    (root / "stdlib.txt").write_text("\n<|endoftext|>\n".join(documents)[:CORPUS_BYTES])
    return {
        "tinyshakespeare": out / "corpus.txt",
        "stdlib": root / "stdlib.txt",
        "alpaca-instructions": out / "instruct.json",
        "sms-spam": out / "classify.tsv",
    }


def prepare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, raw: dict[str, Path]):
    """A project folder with the preset (and the tiny sizes) in params.yaml, its data in
    data/raw (stdlib instruction and classification sets stood in for by the mirror's)."""
    monkeypatch.chdir(tmp_path)
    preset = load_preset(name)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(known(preset)))
    data = preset.params.get("data", {})
    (tmp_path / "data" / "raw").mkdir(parents=True)
    shutil.copy(raw[data.get("corpus", "stdlib")], tmp_path / "data" / "raw" / "corpus.txt")
    instruct = data.get("instruct", "stdlib")
    classify = data.get("classify", "stdlib")
    shutil.copy(
        raw[instruct if instruct != "stdlib" else "alpaca-instructions"],
        tmp_path / "data" / "raw" / "instruct.json",
    )
    shutil.copy(
        raw[classify if classify != "stdlib" else "sms-spam"],
        tmp_path / "data" / "raw" / "classify.tsv",
    )
    # the tiny sizes, as -S overrides on top of the preset
    merged = yaml.safe_load(params.read_text())
    for text in TINY:
        key, value = parse_override(text)
        section, _, k = key.partition(".")
        merged.setdefault(section, {})[k] = value
    params.write_text(yaml.safe_dump(merged))
    return preset


def run_stages(*commands: list[str]) -> None:
    for args in commands:
        result = runner.invoke(app, [*args, "--params", "params.yaml"])
        assert result.exit_code == 0, f"{args}: {result.output}"


@needs_mirror
@pytest.mark.parametrize(
    "name",
    ["seed000", "seed001", "seed002", "seed003"],
)
def test_preset_runs_end_to_end_at_a_tiny_size(tmp_path, monkeypatch, raw, name):
    prepare(tmp_path, monkeypatch, name, raw)
    run_stages(["tokenizer"], ["shard"], ["pretrain"], ["weights"])
    run_stages(["finetune", "instruct"], ["finetune", "classify"], ["evaluate"], ["sample"])
    tok = json.loads(Path("models/tokenizer/tokenizer.json").read_text())
    preset_tokenizer = load_preset(name).params["tokenizer"]
    cut_down = preset_tokenizer.get("min_count", 0) > 0  # GPT-2's tokens the corpus uses
    assert tok["kind"] == ("gpt2-subset" if cut_down else preset_tokenizer["kind"])
    evaluated = json.loads(Path("reports/runs/evaluate.json").read_text())
    models = [evaluated[m] for m in ("base", "instruct")]
    assert all(m["perplexity"] > 1 and m["bits_per_byte"] > 0 for m in models)
    headline = json.loads(Path("reports/metrics/pretrain.json").read_text())
    pretrain = json.loads(Path("reports/runs/pretrain.json").read_text())  # run details
    assert headline == {"pretrain": {"val_loss": pretrain["val_loss"]}}
    assert pretrain["steps"] == 3 and "train_loss" in pretrain
    assert pretrain["params"]["pretrain"]["max_steps"] == 3  # as it ran (-S included)
    config = json.loads(Path("models/base/config.json").read_text())["model"]
    model = load_preset(name).params["model"]
    assert config["n_layer"] == model["n_layer"] and config["block_size"] == model["block_size"]
    assert config["n_head"] == model["n_head"] and config["n_embd"] == 16
    if name == "seed000":
        assert tok["n_vocab"] == 1150 and config["vocab_size"] == 1150


@needs_mirror
def test_seed004_without_gpt2_weights_stops_with_one_line_saying_where(tmp_path, monkeypatch, raw):
    prepare(tmp_path, monkeypatch, "seed004", raw)
    monkeypatch.setenv("GPTPIPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GPTPIPE_MIRROR", raising=False)
    # no network in a test: the download hosts are a closed local port
    dead = (hub.Source("dead", "hf", "http://127.0.0.1:9/gpt2"),)
    monkeypatch.setitem(hub.SIZES, "gpt2", dataclasses.replace(hub.SIZES["gpt2"], sources=dead))
    run_stages(["tokenizer"], ["shard"], ["pretrain"])
    result = runner.invoke(
        app,
        [
            "weights",
            "--params",
            "params.yaml",
            "-S",
            "base.retries=1",
            "-S",
            "base.timeout=1",
            "-S",
            f"base.mirror={tmp_path / 'mirror'}",
        ],
    )
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "base.source" in line
    assert "model.safetensors" in line and str(tmp_path / "mirror" / "gpt2") in line
    assert not Path("models/base").exists()
