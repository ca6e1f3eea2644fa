"""The sample stage: greedy and seeded samples per model and prompt, reproducible."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from helpers import said
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.config import DecodingConfig, SampleConfig, load_section
from gptpipe.generate.beam import beam_search
from gptpipe.generate.decode import Decoding, generate_ids
from gptpipe.model.folder import copy_model, load_model, save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.model.skipped import write_skipped
from gptpipe.prompts import format_prompt
from gptpipe.stages import sample as sample_stage
from gptpipe.tokenizer.folder import eot_id, load_tokenizer, save_gpt2

runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sample")
    save_gpt2(root / "tok")
    for seed, name, stage in ((1, "base", "pretrain"), (2, "tuned", "instruct")):
        torch.manual_seed(seed)
        model = GPT(GPTConfig(vocab_size=50257, block_size=32, n_layer=2, n_head=2, n_embd=32))
        save_model(root / name, model, root / "tok", meta={"stage": stage})
    return {"base": root / "base", "tuned": root / "tuned"}


LEGACY = [DecodingConfig("greedy", temperature=0.0), DecodingConfig("sample")]
CFG = SampleConfig(
    prompts=["The ", "def "],
    max_new_tokens=6,
    temperature=1.0,
    top_k=50,
    num_samples=2,
    seed=7,
    decoding=LEGACY,
)


def test_records_cover_models_prompts_and_methods(models: dict[str, Path], tmp_path: Path) -> None:
    records = sample_stage.run(CFG, [models["base"], models["tuned"]], tmp_path / "samples")
    written = json.loads((tmp_path / "samples" / "samples.json").read_text())
    assert written == records
    keys = {"model", "prompt", "method", "temperature", "top_k", "text"}
    assert all(keys <= set(r) for r in records)
    base = [r for r in records if r["model"] == "base"]
    tuned = [r for r in records if r["model"] == "tuned"]
    assert len(base) == 2 * 3  # prompts x (greedy + 2 samples)
    assert len(tuned) == 2 * 2 * 3  # the instruct model also answers in the Alpaca format
    assert {r["format"] for r in base} == {"raw"}
    assert {r["format"] for r in tuned} == {"raw", "alpaca"}
    assert [r["method"] for r in base[:3]] == ["greedy", "sample", "sample"]
    assert all(r["temperature"] == 1.0 and r["top_k"] == 50 for r in records if r["sample"])
    markdown = (tmp_path / "samples" / "samples.md").read_text()
    for r in records:
        assert r["text"] in markdown
    assert "'def '" in markdown


def test_greedy_text_equals_direct_generation(models: dict[str, Path], tmp_path: Path) -> None:
    records = sample_stage.run(CFG, [models["tuned"]], tmp_path / "samples")
    model, _ = load_model(models["tuned"])
    enc = load_tokenizer(models["tuned"])
    for prompt_format, text in (("raw", "The "), ("alpaca", format_prompt("The "))):
        ids = enc.encode_ordinary(text)  # the Alpaca prompt is longer than the context
        new = generate_ids(model, [ids], Decoding(6), stop_ids=[eot_id(enc)])[0]
        (record,) = [
            r
            for r in records
            if r["method"] == "greedy" and r["prompt"] == "The " and r["format"] == prompt_format
        ]
        assert record["text"] == enc.decode(new)


def test_samples_are_reproducible_and_differ_between_draws(
    models: dict[str, Path], tmp_path: Path
) -> None:
    first = sample_stage.run(CFG, [models["base"]], tmp_path / "a")
    again = sample_stage.run(CFG, [models["base"]], tmp_path / "b")
    assert first == again
    assert (tmp_path / "a" / "samples.md").read_text() == (
        tmp_path / "b" / "samples.md"
    ).read_text()
    draws = [r["text"] for r in first if r["method"] == "sample"]
    assert len(set(draws)) == len(draws)  # an untrained 50k-vocabulary model: no repeats
    # a prompt's samples do not depend on which other prompts are sampled
    alone = sample_stage.run(
        SampleConfig(**{**CFG.__dict__, "prompts": ["def "]}), [models["base"]], tmp_path / "c"
    )
    assert [r["text"] for r in alone] == [r["text"] for r in first if r["prompt"] == "def "]


def test_cli_missing_model_exits_2_naming_it(models: dict[str, Path], tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("sample:\n  prompts: ['Hi']\n  max_new_tokens: 3\n  num_samples: 1\n")
    out = tmp_path / "samples"
    missing = tmp_path / "instruct"
    args = ["sample", "--params", str(params), "--model", str(models["base"])]
    args += ["--attention", str(tmp_path / "attention"), "--details", str(tmp_path / "run.json")]
    result = runner.invoke(app, [*args, "--model", str(missing), "--out", str(out)])
    assert result.exit_code == 2
    assert str(missing) in result.stderr
    assert not out.exists() and not (tmp_path / "attention").exists()
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # summaries and progress go to stderr; stdout is for results
    written = json.loads((out / "samples.json").read_text())
    assert [r["decoding"] for r in written] == ["greedy", "sample", "nucleus", "beam"]  # defaults


def test_cli_ends_with_one_line_saying_what_it_wrote(
    models: dict[str, Path], tmp_path: Path
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("sample:\n  prompts: ['Hi']\n  max_new_tokens: 2\n  num_samples: 1\n")
    out, attention, details = tmp_path / "samples", tmp_path / "attention", tmp_path / "run.json"
    args = ["sample", "--params", str(params), "--model", str(models["base"])]
    args += ["--out", str(out), "--attention", str(attention)]
    result = runner.invoke(app, [*args, "--details", str(details)])
    assert result.exit_code == 0, result.output
    summary, written = said.wrote(result.stderr, "sample")
    records = json.loads((out / "samples.json").read_text())
    assert written == said.paths(out, attention, details) and summary == f"{len(records)} samples"
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert said.wrote(result.stderr, "sample")[1] == said.paths(out, attention)


def test_every_decoding_setting_samples_every_model(
    models: dict[str, Path], tmp_path: Path
) -> None:
    cfg = SampleConfig(
        prompts=["The "],
        max_new_tokens=5,
        temperature=0.9,
        num_samples=2,
        decoding=[
            DecodingConfig("greedy", temperature=0.0),
            DecodingConfig("nucleus", top_k=0, top_p=0.8, repetition_penalty=1.3),
            DecodingConfig("beam", temperature=0.0, num_beams=3, length_penalty=0.5),
            DecodingConfig("hot", temperature=1.5, num_samples=1, max_new_tokens=3),
        ],
    )
    records = sample_stage.run(cfg, [models["base"], models["tuned"]], tmp_path / "s")
    base = [r for r in records if r["model"] == "base"]
    assert [(r["decoding"], r["method"], r["sample"]) for r in base] == [
        ("greedy", "greedy", 0),
        ("nucleus", "sample", 1),
        ("nucleus", "sample", 2),
        ("beam", "beam", 0),
        ("hot", "sample", 1),
    ]
    nucleus = base[1]
    assert (nucleus["temperature"], nucleus["top_k"], nucleus["top_p"]) == (0.9, 0, 0.8)
    assert nucleus["repetition_penalty"] == 1.3 and nucleus["seed"] is not None
    assert base[4]["tokens"] <= 3 and base[4]["temperature"] == 1.5
    model, _ = load_model(models["base"])
    enc = load_tokenizer(models["base"])
    best = beam_search(
        model,
        enc.encode_ordinary("The "),
        Decoding(5, num_beams=3, length_penalty=0.5),
        eot_id(enc),
    )
    assert base[3]["text"] == enc.decode(best) and base[3]["num_beams"] == 3
    assert len([r for r in records if r["model"] == "tuned"]) == 2 * 5  # raw + alpaca
    markdown = (tmp_path / "s" / "samples.md").read_text()
    assert "**nucleus**: temperature 0.9, top-p 0.8, repetition penalty 1.3" in markdown


def test_decoding_params_are_checked_and_temperature_stays_a_fixed_point(
    tmp_path: Path,
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("sample:\n  decoding:\n    - {name: a}\n    - {name: b, temperature: 0}\n")
    cfg = load_section("sample", params, ["sample.temperature=0.3"])
    decodings = [sample_stage.resolve(cfg, d)[0] for d in cfg.decoding]
    assert [d.temperature for d in decodings] == [0.3, 0.0]
    assert sample_stage.resolve(cfg, DecodingConfig("s", slide=5))[0].slide == 5
    for override, key in (
        ("sample.decoding=[{name: x, top_p: 0}]", "sample.decoding[0].top_p"),
        ("sample.decoding=[{name: x, num_beams: 0}]", "sample.decoding[0].num_beams"),
        ("sample.decoding=[{name: x, temperature: .nan}]", "sample.decoding[0].temperature"),
        ("sample.decoding=[{name: x, stop: ['']}]", "sample.decoding[0].stop"),
        ("sample.decoding=[{name: x, slide: -1}]", "sample.decoding[0].slide"),
        ("sample.decoding=[{name: x, colour: red}]", "sample.decoding[0].colour"),
        ("sample.decoding=[{name: x}, {name: x}]", "sample.decoding"),
    ):
        result = runner.invoke(app, ["sample", "--params", str(params), "-S", override])
        assert result.exit_code == 2, override
        assert key in result.stderr, (override, result.stderr)


def test_attention_maps_of_the_instruct_model_appear_with_the_samples(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """The most trained model (the instruction-tuned one) reads sample.attention_prompt; its
    heatmaps, the record naming them and the run details are written with the samples; a
    skipped pretraining marker is left out, and said so."""
    skipped = tmp_path / "pretrain"
    write_skipped(skipped, "pretrain", "base.source is 'gpt2'", base_source="gpt2")
    cfg = SampleConfig(
        prompts=["The "], max_new_tokens=2, num_samples=0, decoding=[LEGACY[0]],
        attention_prompt="The cat sat on the mat.",
    )  # fmt: skip
    attention, details = tmp_path / "attention", tmp_path / "run.json"
    models_given = [skipped, models["tuned"], models["base"]]
    records = sample_stage.run(cfg, models_given, tmp_path / "s", attention, details)
    assert {r["model"] for r in records} == {"tuned", "base"}
    assert (
        "Not sampled: `pretrain`, skipped (base.source is 'gpt2')."
        in (tmp_path / "s" / "samples.md").read_text()
    )
    record = json.loads((attention / "attention.json").read_text())
    assert record["model"] == "tuned" and record["prompt"] == "The cat sat on the mat."
    assert record["layers"] == ["layer_00.png", "layer_01.png"] and record["heads"] == 2
    enc = load_tokenizer(models["tuned"])
    assert record["tokens"] == len(enc.encode_ordinary("The cat sat on the mat."))
    for name in record["layers"]:
        assert (attention / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = json.loads(details.read_text())
    assert run["skipped_models"] == ["pretrain"] and run["samples"] == len(records)
    assert 0 < run["wall_seconds"] < 120
    # Without an instruction-tuned model the last one given reads the first prompt.
    cfg_first = SampleConfig(**{**cfg.__dict__, "attention_prompt": ""})
    sample_stage.run(cfg_first, [models["base"]], tmp_path / "s2", tmp_path / "a2")
    again = json.loads((tmp_path / "a2" / "attention.json").read_text())
    assert again["model"] == "base" and again["prompt"] == "The "


def test_models_with_the_same_weights_are_sampled_once_and_said_so(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """The weights stage copies the pretrained model as the base: sampling both would print
    every continuation twice. The copy is sampled once, and samples.md and the run details say
    whose samples stand for it."""
    copy = tmp_path / "copy"
    copy_model(models["base"], copy)
    details = tmp_path / "run.json"
    records = sample_stage.run(
        CFG, [models["base"], copy, models["tuned"]], tmp_path / "s", details=details
    )
    assert {r["model"] for r in records} == {"base", "tuned"}
    ran = json.loads(details.read_text())
    assert ran["same_weights"] == {"copy": "base"} and ran["models"] == ["base", "tuned"]
    assert ran["params"]["sample"]["seed"] == CFG.seed  # what it ran with
    markdown = (tmp_path / "s" / "samples.md").read_text()
    assert "`copy` has the same weights as `base`" in markdown


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("sample.num_samples=100000000", "sample.num_samples"),
        ("sample.decoding=[{name: s, num_samples: 100000000}]", "sample.decoding[0].num_samples"),
        ("sample.decoding=[{name: b, num_beams: 100000000}]", "sample.decoding[0].num_beams"),
    ],
)
def test_a_count_that_cannot_fit_is_refused_at_start_naming_its_key(
    models: dict[str, Path], tmp_path: Path, override: str, key: str
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("sample:\n  prompts: ['Hi']\n  max_new_tokens: 3\n")
    out, attention = tmp_path / "samples", tmp_path / "attention"
    args = ["sample", "--params", str(params), "--model", str(models["base"]), "-S", override]
    started = time.perf_counter()
    result = runner.invoke(app, [*args, "--out", str(out), "--attention", str(attention)])
    assert time.perf_counter() - started < 5  # refused before decoding 10**8 rows
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert f"'{key}'" in lines[0] and "memory" in lines[0]
    assert not out.exists() and not attention.exists()
