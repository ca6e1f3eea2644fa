"""Model folders: exact round trips, no pickle, clear errors."""

import json

import pytest
import torch

from gptpipe.errors import BadInput
from gptpipe.model.folder import copy_model, load_model, read_info, save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.model.heads import with_classifier
from gptpipe.tokenizer.folder import load_tokenizer, save_gpt2


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer"
    save_gpt2(path)
    return path


def tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50257, block_size=16, n_layer=1, n_head=2, n_embd=16))


def test_round_trip_is_exact_and_self_contained(tmp_path, tokenizer_dir):
    model = tiny()
    save_model(tmp_path / "m", model, tokenizer_dir, meta={"stage": "test"})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer.tiktoken",
    ]
    loaded, info = load_model(tmp_path / "m")
    assert info.config == model.config and info.meta == {"stage": "test"}
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert loaded.lm_head.weight is loaded.wte.weight
    assert load_tokenizer(tmp_path / "m").encode("Hello world") == [15496, 995]


def test_classifier_round_trip_keeps_labels(tmp_path, tokenizer_dir):
    classifier = with_classifier(tiny(), 3)
    save_model(tmp_path / "c", classifier, tokenizer_dir, labels=["a", "b", "c"])
    loaded, info = load_model(tmp_path / "c")
    assert info.labels == ["a", "b", "c"] and loaded.config.n_classes == 3
    torch.testing.assert_close(loaded.score.weight, classifier.score.weight)


def test_labels_must_fit_the_head(tmp_path, tokenizer_dir):
    # class names on a language model (a dict passed where labels go, say) are refused when
    # written and when read, rather than landing in a folder that `info` and `serve` accept
    with pytest.raises(ValueError, match="labels: 1 class names for a model with 0 classes"):
        save_model(tmp_path / "lm", tiny(), tokenizer_dir, labels=["stage"])
    with pytest.raises(ValueError, match="labels: 2 class names for a model with 3 classes"):
        save_model(tmp_path / "c", with_classifier(tiny(), 3), tokenizer_dir, labels=["a", "b"])
    assert not (tmp_path / "lm").exists() and not (tmp_path / "c").exists()
    save_model(tmp_path / "m", tiny(), tokenizer_dir)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["labels"] = ["stage"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(BadInput, match=r"labels.*names 1 classes, model.n_classes is 0"):
        read_info(tmp_path / "m")


def test_with_classifier_shares_the_transformer_weights():
    base = tiny()
    classifier = with_classifier(base, 2)
    assert torch.equal(classifier.h[0].attn.c_attn.weight, base.h[0].attn.c_attn.weight)
    assert torch.equal(classifier.wte.weight, base.wte.weight)


def test_copy_model_and_errors(tmp_path, tokenizer_dir):
    save_model(tmp_path / "m", tiny(), tokenizer_dir)
    copy_model(tmp_path / "m", tmp_path / "copy")
    assert read_info(tmp_path / "copy").config == tiny().config
    with pytest.raises(BadInput, match=r"config\.json"):
        load_model(tmp_path / "missing")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(BadInput, match=r"model\.safetensors"):
        load_model(tmp_path / "m")


def test_weights_that_do_not_match_the_config_are_refused(tmp_path, tokenizer_dir):
    save_model(tmp_path / "m", tiny(), tokenizer_dir)
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    config["model"]["n_layer"] = 2
    config_path.write_text(json.dumps(config))
    with pytest.raises(BadInput, match="do not match"):
        load_model(tmp_path / "m")


def test_the_gelu_is_kept_and_an_unknown_one_is_refused_naming_the_key(tmp_path, tokenizer_dir):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50257, block_size=16, n_layer=1, n_head=2, n_embd=16)
    config.gelu = "exact"
    save_model(tmp_path / "m", GPT(config), tokenizer_dir)
    assert read_info(tmp_path / "m").config.gelu == "exact"
    config_path = tmp_path / "m" / "config.json"
    saved = json.loads(config_path.read_text())
    del saved["model"]["gelu"]  # a folder from before the option: GPT-2's tanh
    config_path.write_text(json.dumps(saved))
    assert read_info(tmp_path / "m").config.gelu == "tanh"
    saved["model"]["gelu"] = "relu"
    config_path.write_text(json.dumps(saved))
    with pytest.raises(BadInput, match=r"model\.gelu"):
        load_model(tmp_path / "m")


def test_failed_save_leaves_nothing_behind(tmp_path):
    with pytest.raises(BadInput, match="tokenizer"):
        save_model(tmp_path / "m", tiny(), tmp_path / "no-tokenizer")
    assert list(tmp_path.iterdir()) == []
