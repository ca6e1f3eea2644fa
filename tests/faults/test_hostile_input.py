"""What a hostile test pass typed: devices the machine lacks (named by their params key or
option), params files DVC cannot read (a key given twice, bytes that are not UTF-8) and a
preset that must never write one, any bytes on `gptpipe classify`'s stdin, absurdly nested
data files, corpora and texts too short to learn from or score. Every refusal: exit 2, one
line naming the key, option or file, no traceback."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers.faults import cli, expect_bad_input, raises_bad_input
from typer.testing import CliRunner, Result

from gptpipe.cli.app import app
from gptpipe.config import parse_params, read_params
from gptpipe.finetune.classify import read_labelled
from gptpipe.finetune.instruct import read_instructions
from gptpipe.model.folder import save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.presets import load_preset, merged, preset_names
from gptpipe.sources.formats import json_array_items, json_lines


def cli_with_stdin(args: list[str | Path], cwd: Path, data: bytes) -> Result:
    """`cli`, with `data` on stdin."""
    with contextlib.chdir(cwd):
        return CliRunner().invoke(app, [str(a) for a in args], input=data)


# --------------------------------------------------------------------------- devices


@pytest.fixture(scope="module")
def classifier(pipeline: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny two-label classifier folder on the fault suite's byte tokenizer."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=257, block_size=16, n_layer=1, n_head=2, n_embd=16, n_classes=2)
    folder = tmp_path_factory.mktemp("classifier") / "model"
    save_model(folder, GPT(config), pipeline["tokenizer"], labels=["neg", "pos"])
    return folder


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch):
    """`gpus(n)`: pretend this machine has n CUDA devices (0: none), whatever it has."""

    def pretend(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return pretend


TEXT = "the cat sees fish. " * 8
# (case id, GPUs pretended, command line ({model}, {classifier}, {shards}, {text} filled in),
# fragments the one line must hold)
DEVICES = [
    (
        "pretrain",
        0,
        ["pretrain", "-S", "pretrain.device=cuda"],
        ["params key 'pretrain.device': 'cuda'", "no CUDA device"],
    ),
    (
        "pretrain-index",
        0,
        ["pretrain", "-S", "pretrain.device=cuda:1"],
        ["params key 'pretrain.device': 'cuda:1'", "no CUDA device"],
    ),
    (
        "pretrain-index-past-count",
        1,
        ["pretrain", "-S", "pretrain.device=cuda:3"],
        ["params key 'pretrain.device'", "'cuda:3'", "only 1 CUDA device"],
    ),
    (
        "finetune-instruct",
        0,
        ["finetune", "instruct", "--base", "{model}", "-S", "instruct.device=cuda"],
        ["params key 'instruct.device'", "no CUDA device"],
    ),
    (
        "finetune-classify",
        0,
        ["finetune", "classify", "--base", "{model}", "-S", "classify.device=cuda"],
        ["params key 'classify.device'", "no CUDA device"],
    ),
    (
        "evaluate-text",
        0,
        ["evaluate", "--model", "{model}", "--text", "{text}", "-S", "evaluate.device=cuda"],
        ["params key 'evaluate.device'", "no CUDA device"],
    ),
    (
        "evaluate-shards",
        0,
        ["evaluate", "--model", "{model}", "--shards", "{shards}", "-S", "evaluate.device=cuda"],
        ["params key 'evaluate.device'", "no CUDA device"],
    ),
    (
        "sample",
        0,
        ["sample", "--model", "{model}", "--out", "samples", "-S", "sample.device=cuda"],
        ["params key 'sample.device'", "no CUDA device"],
    ),
    (
        "attention",
        0,
        ["attention", "--model", "{model}", "--text", "hi", "--device", "cuda"],
        ["--device: 'cuda'", "no CUDA device"],
    ),
    (
        "attention-index-past-count",
        1,
        ["attention", "--model", "{model}", "--text", "hi", "--device", "cuda:1"],
        ["--device: 'cuda:1'", "only 1 CUDA device"],
    ),
    (
        "attention-mps",
        0,
        ["attention", "--model", "{model}", "--text", "hi", "--device", "mps"],
        ["--device: 'mps'", "not a device"],
    ),
    (
        "attention-meta",
        0,
        ["attention", "--model", "{model}", "--text", "hi", "--device", "meta"],
        ["--device: 'meta'", "not a device"],
    ),
    (
        "attention-junk",
        0,
        ["attention", "--model", "{model}", "--text", "hi", "--device", "cuda:x"],
        ["--device: 'cuda:x'", "not a device"],
    ),
    (
        "classify",
        0,
        ["classify", "--model", "{classifier}", "--device", "cuda", "hi"],
        ["--device: 'cuda'", "no CUDA device"],
    ),
    (
        "classify-junk",
        0,
        ["classify", "--model", "{classifier}", "--device", "gpu", "hi"],
        ["--device: 'gpu'", "not a device"],
    ),
]


@pytest.mark.parametrize(
    ("n_gpus", "args", "fragments"), [d[1:] for d in DEVICES], ids=[d[0] for d in DEVICES]
)
def test_device_the_machine_lacks_names_its_key_or_option(
    pipeline, classifier, tmp_path, gpus, n_gpus, args, fragments
):
    gpus(n_gpus)
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    paths = {"model": pipeline["model"], "classifier": classifier, "shards": pipeline["shards"]}
    filled = [a.format(text=text, **paths) for a in args]
    expect_bad_input(cli(filled, tmp_path), *fragments)
    assert not (tmp_path / "models").exists() and not (tmp_path / "samples").exists()


# --------------------------------------------------------------------------- params files

# (case id, params text, -S overrides, fragments)
DUPLICATES = [
    (
        "section-twice",
        "pretrain:\n  max_steps: 3\nmodel:\n  n_layer: 2\npretrain:\n  batch_size: 2\n",
        [],
        ["'pretrain'", "given twice", "lines 1 and 5", "DVC"],
    ),
    (
        "key-twice-in-a-section",
        "pretrain:\n  max_steps: 3\n  seed: 1\n  max_steps: 4\n",
        [],
        ["'pretrain.max_steps'", "given twice", "lines 2 and 4"],
    ),
    (
        "key-twice-in-flow",
        "model: {n_layer: 2, n_layer: 3}\n",
        [],
        ["'model.n_layer'", "given twice (line 1)"],
    ),
    (
        "key-twice-in-a-list-item",
        "sample:\n  decoding:\n    - {name: a, temperature: 1.0, temperature: 0.5}\n",
        [],
        ["'sample.decoding[0].temperature'", "given twice (line 3)"],
    ),
    (
        "quoted-and-plain-key",
        'pretrain:\n  max_steps: 3\n  "max_steps": 4\n',
        [],
        ["'pretrain.max_steps'", "given twice"],
    ),
    (
        "key-twice-in-an-override",
        "",
        ["-S", "sample.decoding=[{name: a, top_k: 1, top_k: 2}]"],
        ["override 'sample.decoding'", "'sample.decoding[0].top_k'", "given twice"],
    ),
]


@pytest.mark.parametrize(
    ("text", "sets", "fragments"), [d[1:] for d in DUPLICATES], ids=[d[0] for d in DUPLICATES]
)
@pytest.mark.parametrize("name", ["params.yaml", "experiment.yaml"])
def test_key_given_twice_is_refused_not_silently_dropped(tmp_path, name, text, sets, fragments):
    params = tmp_path / name
    params.write_text(text, encoding="utf-8")
    result = cli(["pretrain", "--params", params, *sets], tmp_path)
    expect_bad_input(result, *fragments, *([name] if not sets else []))


def test_merge_keys_may_be_overridden_and_are_not_duplicates():
    text = "instruct: &ft\n  batch_size: 4\n  seed: 3\nclassify:\n  <<: *ft\n  batch_size: 8\n"
    assert parse_params(text, "params.yaml")["classify"] == {"batch_size": 8, "seed": 3}


PARAMS_READERS = [
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
    ["info"],
    ["preset", "seed001", "--write"],
    ["preset", "seed001", "--dvc"],
]
UNREADABLE = [
    ("key-twice", b"tokenizer:\n  kind: bpe\ntokenizer:\n  kind: char\n", "given twice"),
    ("latin-1", "pretrain:\n  max_steps: 3  # caf\u00e9\n".encode("latin-1"), "not UTF-8"),
    ("utf-16", "pretrain:\n  max_steps: 3\n".encode("utf-16"), "not UTF-8"),
    ("integer-of-5000-digits", b"pretrain:\n  seed: " + b"7" * 5000 + b"\n", "params.yaml"),
]


@pytest.mark.parametrize(
    ("data", "fragment"), [u[1:] for u in UNREADABLE], ids=[u[0] for u in UNREADABLE]
)
@pytest.mark.parametrize("command", PARAMS_READERS, ids=" ".join)
def test_every_command_refuses_a_params_file_dvc_cannot_read(tmp_path, command, data, fragment):
    params = tmp_path / "params.yaml"
    params.write_bytes(data)
    expect_bad_input(cli([*command, "--params", params], tmp_path), "params.yaml", fragment)
    assert params.read_bytes() == data  # `preset --write` left it as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_override_of_5000_digits_is_one_line(tmp_path):
    result = cli(["pretrain", "-S", "pretrain.seed=" + "7" * 5000], tmp_path)
    expect_bad_input(result, "pretrain.seed")


def _dvc_reads(path: Path) -> object:
    """params.yaml as DVC reads it (ruamel.yaml, which refuses a key given twice); where DVC
    is not installed, as gptpipe's own loader reads it (which refuses the same)."""
    try:
        from dvc.utils.serialize import parse_yaml
    except ImportError:
        return parse_params(path.read_text(encoding="utf-8"), str(path))
    return parse_yaml(path.read_text(encoding="utf-8"), str(path))


# Params files the preset's line-based edit cannot handle in place: each must come out as a
# file DVC reads, holding exactly the params meant (the old ones with the preset's set).
AWKWARD = [
    ("quoted-section", '"tokenizer":\n  kind: bpe\n  min_count: 0\n'),
    ("byte-order-mark", "\ufefftokenizer:\n  kind: bpe  # trained\n"),
    ("flow-section", "tokenizer: {kind: bpe, min_count: 0}\npretrain: {seed: 5}\n"),
    ("section-header-comment", "tokenizer:   # which tokenizer\n  kind: bpe\n"),
    ("key-indented-4", "pretrain:\n    seed: 5\n    max_steps: 7\n"),
    ("anchor-and-merge", "instruct: &ft\n  seed: 3\nclassify:\n  <<: *ft\n  seed: 4\n"),
    ("crlf", "tokenizer:\r\n  kind: bpe\r\npretrain:\r\n  seed: 5\r\n"),
    ("no-final-newline", "pretrain:\n  seed: 5"),
    ("empty", ""),
    ("comments-only", "# nothing yet\n"),
]


@pytest.mark.parametrize("text", [a[1] for a in AWKWARD], ids=[a[0] for a in AWKWARD])
@pytest.mark.parametrize("name", preset_names())
def test_preset_write_leaves_a_file_dvc_reads_with_the_params_meant(tmp_path, name, text):
    params = tmp_path / "params.yaml"
    params.write_bytes(text.encode("utf-8"))
    before = read_params(params)
    result = cli(["preset", name, "--write", "--params", params], tmp_path)
    assert result.exit_code == 0, result.output
    expected = merged(before, load_preset(name))
    assert _dvc_reads(params) == expected
    assert read_params(params) == expected


# --------------------------------------------------------------------------- classify stdin

# (case id, stdin bytes, texts expected (None: one per line, not checked))
STDIN = [
    ("invalid-utf8", b"ok\xff\xfe bad\n\xc3\x28\n", ["ok\ufffd\ufffd bad", "\ufffd("]),
    ("nuls", b"a\x00b\n\x00\n", ["a\x00b", "\x00"]),
    ("control-characters", b"\x1b[31mred\x1b[0m\x07\x08\x7f\n", ["\x1b[31mred\x1b[0m\x07\x08\x7f"]),
    ("line-separators", "a\u2028b\u2029c\x85d\x1ce\n".encode(), ["a\u2028b\u2029c\x85d\x1ce"]),
    ("carriage-returns", b"a\rb\r\nc\r\r\n", ["a\rb", "c"]),
    ("byte-order-mark", b"\xef\xbb\xbfhello\n\xef\xbb\xbfagain\n", ["hello", "\ufeffagain"]),
    ("lone-surrogate-bytes", b"\xed\xa0\x80x\n", ["\ufffd\ufffd\ufffdx"]),
    ("no-final-newline", b"one\ntwo", ["one", "two"]),
    ("only-a-newline", b"\n", [""]),
    ("long-line", b"word " * 400_000 + b"\n", None),
    ("binary", random.Random(0).randbytes(100_000), None),
]


@pytest.mark.parametrize(("data", "texts"), [s[1:] for s in STDIN], ids=[s[0] for s in STDIN])
def test_classify_json_is_valid_whatever_stdin_holds(classifier, tmp_path, data, texts):
    result = cli_with_stdin(["classify", "--model", classifier, "--json"], tmp_path, data)
    assert result.exit_code == 0, result.output
    raw = result.stdout_bytes
    raw.decode("ascii")  # every character escaped: valid in any output encoding
    lines = raw.split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]
    assert all(set(r) == {"text", "label", "probability", "probabilities"} for r in records)
    if texts is not None:
        assert [r["text"] for r in records] == texts
    else:
        assert len(records) == data.count(b"\n") + (not data.endswith(b"\n"))


def test_classify_with_nothing_on_stdin_is_one_line(classifier, tmp_path):
    result = cli_with_stdin(["classify", "--model", classifier, "--json"], tmp_path, b"")
    expect_bad_input(result, "no text to classify")


def test_classify_arguments_that_are_not_utf8_print_valid_json(classifier, tmp_path):
    """Python hands undecodable argument bytes over as lone surrogates."""
    result = cli(["classify", "--model", classifier, "--json", "a\udcffb", "\ud800"], tmp_path)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout_bytes.decode("ascii").splitlines()]
    assert [r["text"] for r in records] == ["a\ufffdb", "\ufffd"]


def test_classify_stdin_not_utf8_in_a_real_process(classifier, tmp_path):
    """The real stdin and stdout (C.UTF-8: Python reads and writes stray bytes as they are)."""
    env = {**os.environ, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": ""}
    done = subprocess.run(
        [sys.executable, "-m", "gptpipe", "classify", "--model", str(classifier), "--json"],
        input=b"caf\xe9\n\x00\xff\n",
        capture_output=True,
        cwd=tmp_path,
        env=env,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    texts = [json.loads(line)["text"] for line in done.stdout.decode("ascii").splitlines()]
    assert texts == ["caf\ufffd", "\x00\ufffd"]


# --------------------------------------------------------------------------- nested data

DEEP = 100_000
NESTED = [
    ("list-of-lists", "[" * DEEP + "]" * DEEP),
    ("object-in-object", '{"a":' * DEEP + "1" + "}" * DEEP),
    ("unclosed", "[" * DEEP),
    ("record-nested", '[{"instruction": ' + "[" * DEEP + "]" * DEEP + "}]"),
    ("json-lines-line-2", '{"a": 1}\n{"a": ' + "[" * DEEP + "\n"),
    ("number-of-5000-digits", '[{"instruction": ' + "9" * 5000 + "}]"),
]
READERS = {
    "instruct": read_instructions,
    "classify": read_labelled,
    "corpus-jsonl": lambda p: list(json_lines(p.open("rb"), str(p))),
    "corpus-json": lambda p: list(json_array_items(p.open("rb"), str(p), "documents")),
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("text", [n[1] for n in NESTED], ids=[n[0] for n in NESTED])
def test_absurdly_nested_data_is_one_line_naming_the_file(tmp_path, reader, text):
    path = tmp_path / "data.json"
    path.write_text(text, encoding="utf-8")
    raises_bad_input(lambda: READERS[reader](path), "data.json")


@pytest.mark.parametrize(
    ("kind", "name"),
    [("instruct", "instruct.json"), ("classify", "classify.jsonl"), ("corpus", "corpus.json")],
)
def test_download_of_nested_data_is_one_line(tmp_path, kind, name):
    sources = {"corpus": "corpus.txt", "instruct": "instruct.json", "classify": "classify.tsv"}
    (tmp_path / "corpus.txt").write_text("some text\n", encoding="utf-8")
    record = {"instruction": "say hi", "input": "", "output": "hi"}
    (tmp_path / "instruct.json").write_text(json.dumps([record, record]), encoding="utf-8")
    (tmp_path / "classify.tsv").write_text("a\tone\nb\ttwo\n", encoding="utf-8")
    sources[kind] = name
    (tmp_path / name).write_text("[" * DEEP + "]" * DEEP, encoding="utf-8")
    sets = [f"data.{k}={tmp_path / v}" for k, v in sources.items()]
    result = cli(["download", "--out", "raw", *(x for s in sets for x in ("-S", s))], tmp_path)
    expect_bad_input(result, name, "nested too deeply")
    assert not (tmp_path / "raw").exists()


def test_finetune_on_nested_instructions_is_one_line(pipeline, tmp_path):
    data = tmp_path / "instruct.json"
    data.write_text("[" * DEEP + "]" * DEEP, encoding="utf-8")
    result = cli(["finetune", "instruct", "--base", pipeline["model"], "--data", data], tmp_path)
    expect_bad_input(result, "instruct.json", "nested too deeply")


# --------------------------------------------------------------------------- too short

# (case id, tokenizer.kind, corpus bytes)
NO_TEXT = [
    ("word-whitespace", "word", b"  \n\t \n \r\n"),
    ("word-punctuation", "word", b"... !!! ??? ;; -- ()\n" * 50),
    ("word-emoji", "word", "\U0001f600 \U0001f680\u2764\ufe0f\n".encode() * 50),
    ("word-mixed-symbols", "word", "\u00a9 \u2122 \u2192 ... \U0001f600\n".encode() * 50),
    ("word-byte-order-mark", "word", b"\xef\xbb\xbf"),
    ("word-separators-and-space", "word", b" \n<|endoftext|>\n \n"),
    ("char-whitespace", "char", b"  \n\t \n"),
    ("char-newlines", "char", b"\r\n\r\n\n"),
    ("char-byte-order-mark", "char", b"\xef\xbb\xbf"),
    ("char-byte-order-mark-and-newlines", "char", b"\xef\xbb\xbf\n\n"),
]


@pytest.mark.parametrize(("kind", "data"), [n[1:] for n in NO_TEXT], ids=[n[0] for n in NO_TEXT])
def test_tokenizer_on_a_corpus_with_nothing_to_learn_is_refused(tmp_path, kind, data):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(data)
    args = ["tokenizer", "--corpus", corpus, "--out", "tok", "-S", f"tokenizer.kind={kind}"]
    expect_bad_input(cli(args, tmp_path), "corpus.txt", "too short", f"tokenizer.kind {kind}")
    assert not (tmp_path / "tok").exists()


@pytest.mark.parametrize(("kind", "data"), [("word", b"a.\n"), ("char", b"a\n")])
def test_one_word_or_character_is_enough_to_build_a_vocabulary(tmp_path, kind, data):
    (tmp_path / "corpus.txt").write_bytes(data)
    args = ["tokenizer", "--corpus", "corpus.txt", "--out", "tok", "-S", f"tokenizer.kind={kind}"]
    assert cli(args, tmp_path).exit_code == 0


# Texts of fewer than 2 tokens for every tokenizer: `evaluate --text` refuses them.
SHORT_TEXTS = [
    ("empty", b""),
    ("one-byte", b"a"),
    ("byte-order-mark", b"\xef\xbb\xbf"),
    ("byte-order-mark-and-one-byte", b"\xef\xbb\xbfa"),
    ("endoftext", b"<|endoftext|>"),
    ("endoftext-line", b"<|endoftext|>\n"),
    ("endoftext-lines", b"<|endoftext|>\r\n<|endoftext|>\n"),
    ("byte-order-mark-and-endoftext", b"\xef\xbb\xbf<|endoftext|>\n"),
]


@pytest.mark.parametrize("data", [s[1] for s in SHORT_TEXTS], ids=[s[0] for s in SHORT_TEXTS])
def test_evaluate_text_too_short_to_score(pipeline, tmp_path, data):
    text = tmp_path / "text.txt"
    text.write_bytes(data)
    result = cli(["evaluate", "--model", pipeline["model"], "--text", text], tmp_path)
    expect_bad_input(result, "text.txt", "too short")
    assert result.stdout == ""


def test_evaluate_text_reads_separator_lines_as_the_token(pipeline, tmp_path):
    """`<|endoftext|>` lines separate documents, as in the corpus and the shards: each is one
    token, not 13 characters scored as text."""
    text = tmp_path / "text.txt"
    text.write_bytes(b"\xef\xbb\xbfab\n<|endoftext|>\ncd\n<|endoftext|>\n")
    args = ["evaluate", "--model", pipeline["model"], "--text", text, "-S", "evaluate.stride=8"]
    result = cli(args, tmp_path)
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["tokens"] == len("ab|cd|") - 1  # the byte ids of ab, cd and two <|endoftext|>
    assert scored["bytes"] == len("bcd")  # the separators are not text


def test_params_yaml_of_the_repository_still_reads():
    """The strict loader reads the real params.yaml as before (no key there is given twice)."""
    repo = Path(__file__).resolve().parents[2] / "params.yaml"
    assert read_params(repo) == yaml.safe_load(repo.read_text(encoding="utf-8"))
