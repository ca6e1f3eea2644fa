"""The weights stage: the pretrained model copied, or GPT-2 weights converted and proven equal."""

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from helpers import said
from helpers.gpt2 import TEXT, hf_model, write_tf_checkpoint
from helpers.http import serve_folder
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.config import BaseConfig
from gptpipe.errors import BadInput
from gptpipe.interop import hub
from gptpipe.model.folder import load_model, read_info, save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.sources.fetch import FetchOptions
from gptpipe.stages import weights
from gptpipe.tokenizer.folder import load_tokenizer, save_gpt2, save_tokenizer, tokenizer_hash

runner = CliRunner()


@pytest.fixture
def pretrained(tmp_path):
    save_tokenizer(tmp_path / "tok", {bytes([i]): i for i in range(256)}, "bpe", "gpt2")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, block_size=16, n_layer=1, n_head=2, n_embd=16))
    save_model(tmp_path / "pretrain", model, tmp_path / "tok", meta={"stage": "pretrain"})
    return tmp_path / "pretrain"


def test_source_pretrain_copies_the_pretrained_model(pretrained, tmp_path):
    info = weights.run(BaseConfig(), pretrained, tmp_path / "base")
    assert info["source"] == "pretrain" and info["meta"] == {"stage": "pretrain"}
    files = sorted(p.name for p in pretrained.iterdir())
    assert sorted(p.name for p in (tmp_path / "base").iterdir()) == files
    for name in files:
        assert (tmp_path / "base" / name).read_bytes() == (pretrained / name).read_bytes()


def test_cli_copies_and_replaces_an_old_base(pretrained, tmp_path):
    shutil.copytree(pretrained, tmp_path / "base")  # an older base model folder
    (tmp_path / "base" / "stale.txt").write_text("old")
    result = runner.invoke(
        app,
        [
            "weights",
            "--params",
            str(tmp_path / "none.yaml"),
            "--pretrained",
            str(pretrained),
            "--out",
            str(tmp_path / "base"),
        ],
    )
    assert result.exit_code == 2 and "none.yaml" in result.stderr  # params file must exist
    params = tmp_path / "params.yaml"
    params.write_text("base:\n  source: pretrain\n")
    result = runner.invoke(
        app,
        [
            "weights",
            "--params",
            str(params),
            "--pretrained",
            str(pretrained),
            "--out",
            str(tmp_path / "base"),
            "--details",
            str(tmp_path / "weights.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "weights.json").read_text())
    assert run["source"] == "pretrain" and 0 < run["wall_seconds"] < 60
    assert result.stdout == ""  # summaries and progress go to stderr; stdout is for results
    assert not (tmp_path / "base" / "stale.txt").exists()
    assert (tmp_path / "base" / "model.safetensors").is_file()


def test_cli_ends_with_one_line_saying_what_it_wrote(pretrained, tmp_path):
    out, details = tmp_path / "base", tmp_path / "runs" / "weights.json"
    params = tmp_path / "params.yaml"
    params.write_text("base:\n  source: pretrain\n")
    args = ["weights", "--params", str(params), "--pretrained", str(pretrained)]
    result = runner.invoke(app, [*args, "--out", str(out), "--details", str(details)])
    assert result.exit_code == 0, result.output
    assert len(said.lines(result.stderr)) == 1
    summary, written = said.wrote(result.stderr, "weights")
    assert written == said.paths(out, details) and str(pretrained) in summary
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert said.wrote(result.stderr, "weights")[1] == said.paths(out)


def test_missing_pretrained_model_and_unknown_source_exit_2(tmp_path):
    with pytest.raises(BadInput, match=r"config\.json"):
        weights.run(BaseConfig(), tmp_path / "missing", tmp_path / "base")
    params = tmp_path / "params.yaml"
    params.write_text("base:\n  source: pretrain\n")
    result = runner.invoke(
        app,
        [
            "weights",
            "--params",
            str(params),
            "--pretrained",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "base"),
        ],
    )
    assert result.exit_code == 2 and "missing" in result.stderr
    save_tokenizer(tmp_path / "bpe", {bytes([i]): i for i in range(256)}, "bpe", "gpt2")
    result = runner.invoke(
        app,
        [
            "weights",
            "--params",
            str(params),
            "-S",
            "base.source=gpt2-huge",
            "--out",
            str(tmp_path / "base"),
        ],
    )
    assert result.exit_code == 2 and "base.source" in result.stderr
    assert "gpt2-xl" in result.stderr  # the allowed names are listed
    assert not (tmp_path / "base").exists()


# ----------------------------------------------------------------------------- GPT-2 weights

HPARAMS = {"n_vocab": 50257, "n_ctx": 128, "n_embd": 64, "n_head": 4, "n_layer": 2}


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A random reference GPT-2 saved in both foreign formats, and GPT-2's tokenizer."""
    root = tmp_path_factory.mktemp("gpt2")
    model = hf_model(seed=7)
    model.save_pretrained(root / "hf")
    write_tf_checkpoint(root / "tf", model.state_dict(), HPARAMS)
    save_gpt2(root / "tok")
    (root / "params.yaml").write_text("base:\n  source: pretrain\nevaluate:\n  stride: 32\n")
    (root / "text.txt").write_text(TEXT)
    return {"root": root, "model": model}


def _weights(gpt2: dict, source, out, tokenizer=None, *extra: str):
    root = gpt2["root"]
    args = ["weights", "--params", str(root / "params.yaml"), "-S", f"base.source={source}"]
    args += ["--tokenizer", str(tokenizer or root / "tok"), "--out", str(out), *extra]
    return runner.invoke(app, args)


def reference_perplexity(model, ids: list[int], stride: int) -> float:
    """Sliding-window perplexity computed with transformers, as in Hugging Face's guide
    "Perplexity of fixed-length models" (every token scored once, the loss summed exactly)."""
    max_length = model.config.n_positions
    input_ids = torch.tensor([ids])
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        trg_len = end - prev_end
        window = input_ids[:, begin:end]
        target = window.clone()
        target[:, :-trg_len] = -100
        with torch.no_grad():
            logits = model(window).logits
        labels = target[:, 1:]
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), labels.reshape(-1), reduction="sum"
        )
        nll += loss.item()
        count += int((labels != -100).sum())
        prev_end = end
        if end == len(ids):
            break
    return math.exp(nll / count)


@pytest.mark.parametrize("layout", ["hf", "tf"])
def test_gpt2_checkpoint_converts_to_equal_logits_and_perplexity(gpt2, tmp_path, layout):
    root, reference = gpt2["root"], gpt2["model"]
    result = _weights(gpt2, root / layout, tmp_path / "base")
    assert result.exit_code == 0, result.output
    model, info = load_model(tmp_path / "base")
    assert info.meta["format"] == ("hf" if layout == "hf" else "openai-tf")
    assert (info.config.n_layer, info.config.n_head, info.config.block_size) == (2, 4, 128)
    assert tokenizer_hash(tmp_path / "base") == tokenizer_hash(root / "tok")
    ids = torch.randint(0, 50257, (3, 128), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (model(ids)[0] - reference(ids).logits).abs().max().item()
    assert diff < 1e-4
    result = runner.invoke(
        app,
        [
            "evaluate",
            *("--params", str(root / "params.yaml")),
            *("--model", str(tmp_path / "base")),
            *("--text", str(root / "text.txt")),
        ],
    )
    assert result.exit_code == 0, result.output
    ours = json.loads(result.stdout)
    tokens = load_tokenizer(root / "tok").encode_ordinary(TEXT)
    assert len(tokens) > 2 * 128 and ours["tokens"] == len(tokens) - 1
    expected = reference_perplexity(reference, tokens, stride=32)
    assert ours["perplexity"] == pytest.approx(expected, rel=1e-5)


def test_gpt2_weights_with_a_trained_bpe_tokenizer_are_refused(gpt2, pretrained, tmp_path):
    bpe = pretrained.parent / "tok"  # the byte-level BPE tokenizer of the pretrained model
    result = _weights(gpt2, gpt2["root"] / "hf", tmp_path / "base", tokenizer=bpe)
    assert result.exit_code == 2
    assert "base.source" in result.stderr and "tokenizer.kind: gpt2" in result.stderr
    assert not (tmp_path / "base").exists()


@pytest.fixture
def server(gpt2):
    """A local HTTP server whose /tf/ serves the OpenAI-format files (/missing/ is a 404)."""
    with serve_folder(gpt2["root"]) as served:
        yield served


TINY = hub.NamedSize("tiny", "7M", n_layer=2, n_head=4, n_embd=64, block_size=128)


def test_named_size_downloads_from_the_first_source_that_works_then_caches(gpt2, server, tmp_path):
    sources = [
        hub.Source("dead", "openai-tf", "http://127.0.0.1:9/nothing"),
        hub.Source("404", "hf", server.url("/missing")),
        hub.Source("local", "openai-tf", server.url("/tf")),
    ]
    found = hub.resolve(
        TINY,
        mirror=None,
        cache=tmp_path,
        options=FetchOptions(timeout=5, retries=1, backoff=0),
        sources=sources,
    )
    assert found.origin == "local" and found.format == "openai-tf"
    for name in hub.OPENAI_FILES:
        assert (found.folder / name).read_bytes() == (gpt2["root"] / "tf" / name).read_bytes()
    assert len(found.files["hparams.json"]["sha256"]) == 64
    assert any(path.startswith("/missing/") for path in server.hits)  # the 404 source was tried
    assert all(server.hits[f"/tf/{name}"] == 1 for name in hub.OPENAI_FILES)
    again = hub.resolve(TINY, mirror=None, cache=tmp_path, sources=[])  # no network needed
    assert again.origin == "cache" and again.folder == found.folder
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(".")) == []


def test_named_size_from_the_mirror_folder_or_a_message_saying_where(gpt2, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "7M").mkdir(parents=True)
    for name in hub.HF_FILES:
        (mirror / "7M" / name).write_bytes((gpt2["root"] / "hf" / name).read_bytes())
    found = hub.resolve(TINY, mirror=mirror, cache=tmp_path / "cache", sources=[])
    assert found.origin == "mirror" and found.format == "hf"
    with pytest.raises(BadInput, match=r"put config\.json \+ model\.safetensors") as exc:
        hub.resolve(TINY, mirror=tmp_path / "empty", cache=tmp_path / "cache", sources=[])
    assert "empty/tiny" in str(exc.value) and "base.source" in str(exc.value)


def test_named_gpt2_from_the_mirror_checks_the_size(gpt2, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "gpt2").mkdir(parents=True)
    for name in hub.OPENAI_FILES:
        (mirror / "gpt2" / name).write_bytes((gpt2["root"] / "tf" / name).read_bytes())
    monkeypatch.setenv("GPTPIPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GPTPIPE_MIRROR", str(mirror))
    result = _weights(gpt2, "gpt2", tmp_path / "base")
    assert result.exit_code == 2 and "not gpt2's (12, 12, 768, 50257, 1024)" in result.stderr
    assert not (tmp_path / "base").exists()


def test_base_folder_meta_records_the_source(gpt2, tmp_path):
    result = _weights(gpt2, gpt2["root"] / "tf", tmp_path / "base")
    assert result.exit_code == 0, result.output
    meta = read_info(tmp_path / "base").meta
    assert meta["stage"] == "weights" and meta["source"].endswith("tf")
    assert meta["origin"] == str((gpt2["root"] / "tf").resolve())
