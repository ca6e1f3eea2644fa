"""Typed params: loading, -S overrides, validation errors that name the key."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from gptpipe.config import (
    SECTIONS,
    ModelConfig,
    TokenizerConfig,
    build_section,
    describe,
    load_section,
    parse_override,
    read_params,
    to_dict,
)
from gptpipe.errors import BadInput, ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_repository_params_file_is_valid_for_every_section():
    params = read_params(REPO / "params.yaml")
    assert set(params) == set(SECTIONS)
    for name in SECTIONS:
        build_section(params, name)


@pytest.mark.parametrize("name", list(SECTIONS))
def test_params_file_holds_every_documented_key_with_the_built_in_default(name):
    """Every key `--help` documents is in params.yaml (so `dvc exp run -S key=...` finds it),
    and the dataclass default equals the file's value (a stage run alone agrees with DVC)."""
    on_file = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))[name]
    assert set(on_file) == {f.name for f in dataclasses.fields(SECTIONS[name])}
    # parsed as the stages parse it (sample.decoding entries leave unset keys out)
    assert to_dict(build_section({name: on_file}, name)) == to_dict(SECTIONS[name]())


def test_fixed_point_keys_exist():
    params = read_params(REPO / "params.yaml")
    for dotted in (
        "data.corpus",
        "data.instruct",
        "data.classify",
        "data.mirror",
        "tokenizer.kind",
        "tokenizer.vocab_size",
        "pretrain.max_steps",
        "base.source",
        "evaluate.stride",
        "sample.temperature",
    ):
        section, key = dotted.split(".")
        assert key in params[section], dotted


def test_override_uses_yaml_values_and_dotted_keys(tmp_path):
    path = write(tmp_path, {"pretrain": {"max_steps": 5}})
    cfg = load_section("pretrain", path, ["pretrain.max_steps=7", "pretrain.learning_rate=3e-4"])
    assert cfg.max_steps == 7 and cfg.learning_rate == pytest.approx(3e-4)
    assert parse_override("sample.prompts=[a, b]") == ("sample.prompts", ["a", "b"])


def test_int_is_accepted_for_float_but_not_the_reverse(tmp_path):
    path = write(tmp_path, {"pretrain": {"learning_rate": 1, "max_steps": 2.5}})
    with pytest.raises(ConfigError, match=r"'pretrain.max_steps'.*integer"):
        load_section("pretrain", path)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.n_embd=130", "model.n_embd"),  # not divisible by n_head=4
        ("model.n_layer=0", "model.n_layer"),
        ("model.bias=yes please", "model.bias"),
        ("model.gelu=relu", "model.gelu"),
        ("model.colour=red", "model.colour"),
        ("tokenizer.kind=wordpiece", "tokenizer.kind"),
        ("sample.temperature=-1", "sample.temperature"),
        ("base.source=somewhere", "base.source"),
        ("evaluate.stride=0", "evaluate.stride"),
        ("tokenizer.special_tokens=[<|a|>, <|a|>]", "tokenizer.special_tokens[1]"),
        ("tokenizer.special_tokens=[<|a|>, '']", "tokenizer.special_tokens[1]"),
        ("tokenizer.special_tokens=[<|endoftext|>]", "tokenizer.special_tokens[0]"),
        ("tokenizer.special_tokens=<|a|>", "tokenizer.special_tokens"),
    ],
)
def test_bad_values_name_the_key(tmp_path, override, key):
    section = key.split(".")[0]
    with pytest.raises(ConfigError) as info:
        load_section(section, REPO / "params.yaml", [override])
    assert f"'{key}'" in str(info.value)
    assert "\n" not in str(info.value)


def test_special_tokens_from_params_file_and_set(tmp_path):
    first, second = TokenizerConfig(), TokenizerConfig()
    assert first.special_tokens == [] and first.special_tokens is not second.special_tokens
    path = write(tmp_path, {"tokenizer": {"special_tokens": ["<|im_start|>", "<|im_end|>"]}})
    assert load_section("tokenizer", path).special_tokens == ["<|im_start|>", "<|im_end|>"]
    for override in (
        "tokenizer.special_tokens=[<|pad|>, <|im_start|>]",
        'tokenizer.special_tokens=["<|pad|>", "<|im_start|>"]',
    ):
        cfg = load_section("tokenizer", path, [override])
        assert cfg.special_tokens == ["<|pad|>", "<|im_start|>"]
    assert load_section("tokenizer", path, ["tokenizer.special_tokens=[]"]).special_tokens == []
    assert "tokenizer.special_tokens = []" in describe("tokenizer")


@pytest.mark.parametrize(
    ("kwargs", "key", "message"),
    [
        ({"special_tokens": ["<|a|>", " \t"]}, "tokenizer.special_tokens[1]", "only whitespace"),
        ({"special_tokens": ["<|a|>", "<|b|>", "<|a|>"]}, "tokenizer.special_tokens[2]", "twice"),
        ({"special_tokens": ["<|endoftext|>"]}, "tokenizer.special_tokens[0]", "always"),
        ({"special_tokens": ["<|im|>x", "<|im|>"]}, "tokenizer.special_tokens[1]", "prefix"),
        ({"special_tokens": ["<|endoftext|>2"]}, "tokenizer.special_tokens[0]", "prefix"),
        ({"special_tokens": ["!"]}, "tokenizer.special_tokens[0]", "one byte"),
        ({"kind": "gpt2", "special_tokens": ["<|pad|>"]}, "tokenizer.special_tokens", "gpt2"),
        (
            {"vocab_size": 259, "special_tokens": ["<|a|>", "<|b|>", "<|c|>"]},
            "tokenizer.vocab_size",
            "must be in 260..1000000",
        ),
    ],
)
def test_special_tokens_validation_names_the_key(kwargs, key, message):
    with pytest.raises(ConfigError) as info:
        TokenizerConfig(**kwargs)
    assert info.value.key == key and message in str(info.value)
    assert "\n" not in str(info.value)


def test_vocab_size_leaves_room_for_every_special_token():
    assert TokenizerConfig(vocab_size=259, special_tokens=["<|a|>", "<|b|>"]).vocab_size == 259
    assert TokenizerConfig(special_tokens=["é", "[PAD]", " <sep>"])  # é is 2 bytes: allowed
    with pytest.raises(ConfigError, match=r"must be in 257\.\.1000000$"):
        TokenizerConfig(vocab_size=256)


def test_unknown_section_and_malformed_override():
    with pytest.raises(ConfigError, match="unknown section"):
        read_params(REPO / "params.yaml", ["nosuch.key=1"])
    with pytest.raises(BadInput, match=r"SECTION\.KEY=VALUE"):
        read_params(REPO / "params.yaml", ["max_steps=1"])


def test_missing_and_malformed_params_files(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        read_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(BadInput, match=r"bad\.yaml"):
        read_params(bad)


def test_defaults_build_without_a_params_file():
    assert ModelConfig().n_embd % ModelConfig().n_head == 0
    for cls in SECTIONS.values():
        cls()


def test_describe_lists_every_key_with_help():
    text = describe("model")
    assert "model.n_embd" in text and "divisible by n_head" in text


def test_one_of_max_steps_and_epochs_sets_the_length_of_a_fine_tuning() -> None:
    """A set value is never silently ignored: both set (or neither) is bad input naming the
    key and saying how to fix it."""
    from gptpipe.config import ClassifyConfig, InstructConfig

    with pytest.raises(ConfigError, match=r"classify\.max_steps.*30 and classify\.epochs 5"):
        ClassifyConfig(max_steps=30)  # epochs 5 by default
    with pytest.raises(ConfigError, match=r"instruct\.max_steps.*0 needs instruct\.epochs > 0"):
        InstructConfig(max_steps=0)
    assert ClassifyConfig(max_steps=30, epochs=0).max_steps == 30
    assert InstructConfig(max_steps=0, epochs=2).epochs == 2
    assert ClassifyConfig().keep == InstructConfig().keep == "final"
