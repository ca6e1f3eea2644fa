"""`gptpipe generate` and `gptpipe info` through the CLI, against direct library calls."""

from __future__ import annotations

import io
import json
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.config import TokenizerConfig
from gptpipe.generate.decode import Decoding, generate_ids
from gptpipe.model.folder import load_model, save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.model.heads import with_classifier
from gptpipe.prompts import format_prompt
from gptpipe.stages import tokenizer as tokenizer_stage
from gptpipe.tokenizer.folder import eot_id, load_tokenizer, save_gpt2

runner = CliRunner()
CONFIG = {"vocab_size": 50257, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("generate")
    save_gpt2(root / "tok")
    torch.manual_seed(0)
    lm = GPT(GPTConfig(**CONFIG))
    save_model(root / "lm", lm, root / "tok", meta={"stage": "pretrain", "steps": 3})
    save_model(root / "cls", with_classifier(lm, 2), root / "tok", labels=["ham", "spam"])
    return {"lm": root / "lm", "cls": root / "cls"}


def direct(model_dir: Path, text: str, n: int) -> str:
    model, _ = load_model(model_dir)
    enc = load_tokenizer(model_dir)
    ids = generate_ids(model, [enc.encode_ordinary(text)], Decoding(n), stop_ids=[eot_id(enc)])
    return enc.decode(ids[0])


def gen(model_dir: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["generate", "--model", str(model_dir), *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_greedy_is_deterministic_and_equals_the_library(models: dict[str, Path]) -> None:
    args = ("--prompt", "Once upon a time", "--max-new-tokens", "8", "--temperature", "0")
    code, first, _ = gen(models["lm"], *args)
    assert code == 0
    assert first == direct(models["lm"], "Once upon a time", 8) + "\n"
    assert gen(models["lm"], *args, "--seed", "99")[1] == first  # greedy ignores the seed


def test_sampling_follows_the_seed(models: dict[str, Path]) -> None:
    args = ("--prompt", "Hello", "--max-new-tokens", "8", "--temperature", "1", "--top-k", "0")
    one = gen(models["lm"], *args, "--seed", "1")[1]
    assert one == gen(models["lm"], *args, "--seed", "1")[1]
    assert one != gen(models["lm"], *args, "--seed", "2")[1]


def test_instruct_wraps_the_prompt_in_the_alpaca_format(models: dict[str, Path]) -> None:
    args = ("--prompt", "Name a colour.", "--max-new-tokens", "5", "--temperature", "0")
    code, out, _ = gen(models["lm"], *args, "--instruct", "--input", "red or blue")
    assert code == 0
    assert out == direct(models["lm"], format_prompt("Name a colour.", "red or blue"), 5) + "\n"
    assert out != gen(models["lm"], *args)[1]


def test_interactive_answers_each_line_until_eof(models: dict[str, Path]) -> None:
    args = ("--interactive", "--max-new-tokens", "4", "--temperature", "0")
    code, out, _ = gen(models["lm"], *args, stdin="The cat\n\nA dog\n")
    assert code == 0
    expected = [direct(models["lm"], p, 4) for p in ("The cat", "A dog")]
    assert out == "".join(f"{e}\n" for e in expected)


def test_prompt_from_stdin_when_not_a_tty(models: dict[str, Path]) -> None:
    code, out, _ = gen(models["lm"], "--max-new-tokens", "4", "--temperature", "0", stdin="Hi")
    assert code == 0
    assert out == direct(models["lm"], "Hi", 4) + "\n"


def test_generate_bad_input_exits_2(models: dict[str, Path], tmp_path: Path) -> None:
    code, _, err = gen(tmp_path / "missing", "--prompt", "x")
    assert code == 2 and str(tmp_path / "missing") in err
    code, _, err = gen(models["cls"], "--prompt", "x")
    assert code == 2 and "classifier" in err
    code, _, err = gen(models["lm"], "--prompt", "x", "--temperature", "-1")
    assert code == 2 and "--temperature" in err


def test_info_json_counts_every_parameter_once(models: dict[str, Path]) -> None:
    for name in ("lm", "cls"):
        result = runner.invoke(app, ["info", "--model", str(models[name]), "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        model, _ = load_model(models[name])
        counts = data["parameters"]
        assert counts["total"] == sum(p.numel() for p in model.parameters())
        groups = ("embeddings", "attention", "mlp", "layer_norms", "head")
        assert sum(counts[g] for g in groups) == counts["total"]
        assert counts["embeddings"] == (50257 + 32) * 32
        assert counts["attention"] == 2 * (32 * 96 + 96 + 32 * 32 + 32)
        assert counts["mlp"] == 2 * (32 * 128 + 128 + 128 * 32 + 32)
        assert counts["layer_norms"] == (2 * 2 + 1) * 2 * 32
        assert counts["head"] == (0 if name == "lm" else 32 * 2 + 2)
    assert data["labels"] == ["ham", "spam"]


def test_info_table_and_params_mode(models: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["info", "--model", str(models["lm"])])
    assert result.exit_code == 0, result.output
    total = sum(p.numel() for p in load_model(models["lm"])[0].parameters())
    assert f"{total:,}" in result.stdout
    assert "tied to embeddings" in result.stdout and "stage pretrain" in result.stdout
    params = tmp_path / "params.yaml"
    params.write_text("tokenizer:\n  kind: gpt2\nmodel:\n  n_layer: 2\n  n_head: 2\n  n_embd: 32\n")
    args = ["info", "--params", str(params), "-S", "model.block_size=32", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["config"] == {
        **CONFIG,
        "dropout": 0.0,
        "bias": True,
        "n_classes": 0,
        "gelu": "tanh",
    }
    assert data["parameters"]["total"] == total
    result = runner.invoke(app, ["info", "--model", str(tmp_path / "none")])
    assert result.exit_code == 2 and str(tmp_path / "none") in result.stderr


def test_generate_streams_pieces_as_they_are_produced(models: dict[str, Path]) -> None:
    from gptpipe.cli.generate import write_stream

    class Recorder(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1

    out = Recorder()
    assert write_stream(iter(["a", "bc", "d"]), out) == "abcd"
    assert out.getvalue() == "abcd" and out.flushes == 3


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--temperature", "nan"), "--temperature"),
        (("--temperature", "-0.5"), "--temperature"),
        (("--top-p", "0"), "--top-p"),
        (("--top-p", "1.5"), "--top-p"),
        (("--num-beams", "0"), "--num-beams"),
        (("--stop", ""), "--stop"),
        (("--num-samples", "0"), "--num-samples"),
        (("--max-new-tokens", "0"), "--max-new-tokens"),
        (("--top-k", "-1"), "--top-k"),
        (("--repetition-penalty", "0"), "--repetition-penalty"),
        (("--length-penalty", "nan"), "--length-penalty"),
        (("--slide", "-1"), "--slide"),
        (("--dtype", "float16"), "--dtype"),
        (("--stop", "a", "--stop", ""), "--stop"),
        (("--temperature", "1e-40"), "--temperature"),  # would overflow the logits
        (("--seed", "-1"), "--seed"),
        (("--seed", str(2**64)), "--seed"),  # torch.manual_seed cannot take it
    ],
)
def test_bad_decoding_options_exit_2_naming_them(
    models: dict[str, Path], args: tuple[str, ...], named: str
) -> None:
    code, out, err = gen(models["lm"], "--prompt", "x", *args)
    assert code == 2 and named in err and out == ""
    assert len(err.strip().splitlines()) == 1


def test_max_new_tokens_has_a_documented_bound() -> None:
    """`gptpipe generate` ends after at most --max-new-tokens tokens per sample, a number with
    an upper bound (refused above it) that --help and the README's generate lines state."""
    from gptpipe.decoding import MAX_NEW_TOKENS

    generate = typer.main.get_command(app).commands["generate"]
    (option,) = [p for p in generate.params if p.name == "max_new_tokens"]
    bound = f"{MAX_NEW_TOKENS:,}"
    assert bound in option.help and "ends" in option.help, option.help
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    said = [p for p in readme.split("\n\n") if "--max-new-tokens" in p and bound in p]
    assert said, "the README's generate lines do not state the bound of --max-new-tokens"
    code, out, err = gen(
        Path("no-model"), "--prompt", "x", "--max-new-tokens", str(MAX_NEW_TOKENS + 1)
    )
    assert code == 2 and out == "" and err.count("\n") == 1 and "--max-new-tokens" in err


def test_every_strategy_from_the_command_line(models: dict[str, Path]) -> None:
    from gptpipe.generate.beam import beam_search
    from gptpipe.generate.decode import Decoding

    model, _ = load_model(models["lm"])
    enc = load_tokenizer(models["lm"])
    ids = enc.encode_ordinary("The")
    best = beam_search(model, ids, Decoding(6, num_beams=3, length_penalty=0.5), eot_id(enc))
    code, out, _ = gen(
        models["lm"],
        "--prompt",
        "The",
        "--max-new-tokens",
        "6",
        "--num-beams",
        "3",
        "--length-penalty",
        "0.5",
    )
    assert code == 0 and out == enc.decode(best) + "\n"
    args = (
        "--prompt",
        "The",
        "--max-new-tokens",
        "6",
        "--temperature",
        "1",
        "--top-p",
        "0.9",
        "--repetition-penalty",
        "1.3",
        "--num-samples",
        "3",
        "--seed",
        "4",
    )
    code, out, err = gen(models["lm"], *args)
    assert code == 0 and len(out.splitlines()) == 3 and "sample 3" in err
    assert gen(models["lm"], *args)[1] == out
    greedy = direct(models["lm"], "The", 6)
    stop = greedy[2:5]
    code, out, _ = gen(
        models["lm"],
        "--prompt",
        "The",
        "--max-new-tokens",
        "6",
        "--temperature",
        "0",
        "--stop",
        stop,
    )
    assert code == 0 and out == greedy[: greedy.index(stop)] + "\n"
    code, out, _ = gen(models["lm"], "--prompt", "", "--max-new-tokens", "3", "--temperature", "0")
    model_ids = [eot_id(enc)]
    expected = generate_ids(model, [model_ids], Decoding(3), stop_ids=[eot_id(enc)])[0]
    assert code == 0 and out == enc.decode(expected) + "\n"


def test_stop_takes_text_as_typed_and_the_readme_passes_real_newlines() -> None:
    """--stop reads no escapes (a backslash-n is two characters): its help says so and how to
    pass a newline in bash, and the README's examples pass real newlines ($'...')."""
    generate = typer.main.get_command(app).commands["generate"]
    (stop,) = [p for p in generate.params if p.name == "stop"]
    assert "no escapes" in stop.help and "$'\\n" in stop.help
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    stops = re.findall(r"--stop\s+(\$?'[^']*'|\"[^\"]*\"|\S+)", readme)
    assert stops and all("\\" not in arg or arg.startswith("$'") for arg in stops), stops


def test_generation_goes_on_past_the_context_with_the_slide_of_slide(
    models: dict[str, Path],
) -> None:
    model, _ = load_model(models["lm"])
    enc = load_tokenizer(models["lm"])
    ids = enc.encode_ordinary("The")
    for slide in (0, 5):
        expected = generate_ids(model, [ids], Decoding(40, slide=slide), stop_ids=[eot_id(enc)])
        args = ("--prompt", "The", "--max-new-tokens", "40", "--temperature", "0")
        code, out, _ = gen(models["lm"], *args, "--slide", str(slide))
        assert code == 0 and out == enc.decode(expected[0]) + "\n"  # 41 tokens > block 32
    assert len(expected[0]) == 40


def test_chat_refuses_a_classifier_and_a_bad_option(models: dict[str, Path]) -> None:
    result = runner.invoke(app, ["chat", "--model", str(models["cls"])], input="")
    assert result.exit_code == 2 and "classifier" in result.stderr
    result = runner.invoke(app, ["chat", "--model", str(models["lm"]), "--top-p", "-1"])
    assert result.exit_code == 2 and "--top-p" in result.stderr


def test_params_mode_counts_the_vocabulary_each_tokenizer_kind_gives(tmp_path: Path) -> None:
    from gptpipe.cli.info import describe_params
    from gptpipe.tokenizer.folder import save_bytes

    params = tmp_path / "params.yaml"
    expected = {"gpt2": 50257, "byte": 257, "bpe": 4096, "word": 4096, "char": 257}
    for kind, vocab in expected.items():
        params.write_text(f"tokenizer:\n  kind: {kind}\n  vocab_size: 4096\n")
        described = describe_params(params, [])
        assert described["config"]["vocab_size"] == vocab, kind
    assert "not known before the tokenizer stage" in described["vocabulary"]
    # Once the tokenizer stage has run beside the params file, its folder says exactly.
    save_bytes(tmp_path / "models" / "tokenizer")
    params.write_text("tokenizer:\n  kind: byte\n")
    assert describe_params(params, [])["vocabulary"] == "from models/tokenizer"
    result = runner.invoke(app, ["info", "--params", str(params)])
    assert result.exit_code == 0 and "vocabulary from models/tokenizer" in result.stdout
    # GPT-2's tokens a corpus uses: at most GPT-2's count until the tokenizer stage has run
    params.write_text("tokenizer:\n  kind: gpt2\n  min_count: 2\n")
    described = describe_params(params, [])
    assert described["config"]["vocab_size"] == 50257 and "upper bound" in described["vocabulary"]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question: to be", encoding="utf-8")
    shutil.rmtree(tmp_path / "models" / "tokenizer")
    tokenizer_stage.run(
        TokenizerConfig(kind="gpt2", min_count=2), corpus, tmp_path / "models" / "tokenizer", False
    )
    described = describe_params(params, [])
    assert described["vocabulary"] == "from models/tokenizer"
    assert 257 < described["config"]["vocab_size"] < 270


def test_beams_that_cannot_fit_are_refused_before_decoding(models: dict[str, Path]) -> None:
    """--num-beams decodes its beams together: a count no memory holds is one line naming
    it, exit 2, at once; --num-samples decodes one sample after another and needs no bound."""
    started = time.perf_counter()
    code, out, err = gen(models["lm"], "--prompt", "x", "--num-beams", str(10**9))
    assert time.perf_counter() - started < 5
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--num-beams: beam search with 1,000,000,000 beams" in err and "memory" in err
