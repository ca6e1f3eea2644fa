"""Bad model folders: truncated or bit-flipped weights (the recorded sha256 catches them), a
corrupt safetensors header, config.json with missing keys, wrong types or absurd sizes, a
pickle where the weights belong (never unpickled), NaN weights, a path that is a file; and
evaluate on empty or too-short text."""

from __future__ import annotations

import json
import pathlib
import pickle
import struct
from pathlib import Path

import pytest
import torch
from helpers.faults import cli, expect_bad_input, raises_bad_input
from safetensors.torch import load_file, save_file

from gptpipe.model.folder import DIGEST, load_model, weights_digest


def _weights(folder: Path) -> Path:
    return folder / "model.safetensors"


def _edit_config(folder: Path, change, keep_digest: bool = True) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def _truncate(folder: Path) -> None:
    data = _weights(folder).read_bytes()
    _weights(folder).write_bytes(data[: len(data) - 100])


def _flip_bit(folder: Path) -> None:
    data = bytearray(_weights(folder).read_bytes())
    data[-10] ^= 0x01  # one bit of the last tensor's data
    _weights(folder).write_bytes(bytes(data))


def _garbage_header(folder: Path) -> None:
    data = _weights(folder).read_bytes()
    _weights(folder).write_bytes(
        struct.pack("<Q", 40) + b"{not json at all, just bytes}..." + data[48:]
    )
    _edit_config(folder, lambda c: c.pop(DIGEST))


def _header_offsets_past_end(folder: Path) -> None:
    data = _weights(folder).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__")
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin, end + 10**9]
    blob = json.dumps(header).encode()
    _weights(folder).write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + n :])
    _edit_config(folder, lambda c: c.pop(DIGEST))


class _Marker:
    """Unpickling this creates a file: the proof that something unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def _pickle_as_weights(folder: Path) -> None:
    _weights(folder).write_bytes(pickle.dumps({"wte.weight": _Marker(folder.parent / "UNPICKLED")}))


def _nan_weight(folder: Path) -> None:
    tensors = load_file(_weights(folder))
    tensors["ln_f.weight"][3] = float("nan")
    save_file(tensors, _weights(folder), metadata={"format": "pt"})
    digest = weights_digest(_weights(folder))  # a consistent folder: the digest matches
    _edit_config(folder, lambda c: c.update({DIGEST: digest}))


def _set(key: str, value) -> callable:
    def change(config: dict) -> None:
        config["model"][key] = value

    return change


MODEL_FAULTS = [
    ("truncated-weights", _truncate, ["model.safetensors", "corrupt"]),
    ("bit-flipped-weights", _flip_bit, ["model.safetensors", "corrupt"]),
    ("corrupt-header", _garbage_header, ["model.safetensors", "not a safetensors file"]),
    ("header-past-end", _header_offsets_past_end, ["model.safetensors", "outside the file"]),
    ("pickle-as-weights", _pickle_as_weights, ["model.safetensors"]),
    ("nan-weight", _nan_weight, ["model.safetensors", "ln_f.weight", "NaN"]),
    ("weights-missing", lambda f: _weights(f).unlink(), ["model.safetensors", "not found"]),
    ("config-missing", lambda f: (f / "config.json").unlink(), ["config.json", "not found"]),
    ("config-not-json", lambda f: (f / "config.json").write_text("{"), ["config.json", "JSON"]),
    ("config-a-list", lambda f: (f / "config.json").write_text("[1, 2]"), ["config.json"]),
    (
        "missing-n_layer",
        lambda f: _edit_config(f, lambda c: c["model"].pop("n_layer")),
        ["config.json", "model.n_layer", "missing"],
    ),
    (
        "string-n_layer",
        lambda f: _edit_config(f, _set("n_layer", "1")),
        ["config.json", "model.n_layer", "integer"],
    ),
    ("zero-heads", lambda f: _edit_config(f, _set("n_head", 0)), ["config.json", "model.n_head"]),
    (
        "float-width",
        lambda f: _edit_config(f, _set("n_embd", 16.0)),
        ["config.json", "model.n_embd"],
    ),
    (
        "bias-a-string",
        lambda f: _edit_config(f, _set("bias", "yes")),
        ["config.json", "model.bias"],
    ),
    (
        "model-a-list",
        lambda f: _edit_config(f, lambda c: c.update(model=[1, 2])),
        ["config.json", "'model'", "mapping"],
    ),
    (
        "labels-a-number",
        lambda f: _edit_config(f, lambda c: c.update(labels=3)),
        ["config.json", "labels"],
    ),
    (
        "meta-a-list",
        lambda f: _edit_config(f, lambda c: c.update(meta=[])),
        ["config.json", "meta"],
    ),
    (
        "absurd-depth",
        lambda f: _edit_config(f, _set("n_layer", 10**6)),
        ["config.json", "model.n_layer"],
    ),
    (
        "absurd-size",
        lambda f: _edit_config(
            f, lambda c: c["model"].update(n_embd=131072, n_head=1, n_layer=9000)
        ),
        ["config.json", "needs about"],
    ),
    ("shapes-differ", lambda f: _edit_config(f, _set("n_embd", 32)), ["do not match"]),
]


@pytest.mark.parametrize(
    ("damage", "fragments"), [f[1:] for f in MODEL_FAULTS], ids=[f[0] for f in MODEL_FAULTS]
)
def test_damaged_model_folder_is_refused(broken, damage, fragments):
    damage(broken["model"])
    raises_bad_input(lambda: load_model(broken["model"]), *fragments)
    assert not (broken["root"] / "UNPICKLED").exists()  # nothing was ever unpickled


def test_a_pickle_where_the_model_belongs_is_never_loaded_through_the_cli(broken, tmp_path):
    _pickle_as_weights(broken["model"])
    text = tmp_path / "text.txt"
    text.write_text("the cat sees fish. " * 20)
    result = cli(["evaluate", "--model", broken["model"], "--text", text], tmp_path)
    expect_bad_input(result, "model.safetensors")
    assert not (broken["root"] / "UNPICKLED").exists()


def test_flipped_bit_through_the_cli(broken, tmp_path):
    _flip_bit(broken["model"])
    text = tmp_path / "text.txt"
    text.write_text("the cat sees fish. " * 20)
    result = cli(["evaluate", "--model", broken["model"], "--text", text], tmp_path)
    expect_bad_input(result, "model.safetensors", "corrupt")


def test_model_path_that_is_a_file(pipeline, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the cat sees fish. " * 20)
    expect_bad_input(cli(["evaluate", "--model", text, "--text", text], tmp_path), "text.txt")
    expect_bad_input(cli(["info", "--model", text], tmp_path), "text.txt")


@pytest.mark.parametrize(
    "content, fragment",
    [(b"", "too short"), (b"a", "too short"), (b"\xff\xfe", "UTF-8")],
    ids=["empty", "one-token", "not-utf8"],
)
def test_evaluate_on_empty_or_too_short_text(pipeline, tmp_path, content, fragment):
    text = tmp_path / "text.txt"
    text.write_bytes(content)
    result = cli(["evaluate", "--model", pipeline["model"], "--text", text], tmp_path)
    expect_bad_input(result, "text.txt", fragment)
    assert result.stdout == ""


def test_saved_folder_records_the_digest_of_its_weights(pipeline):
    config = json.loads((pipeline["model"] / "config.json").read_text())
    assert config[DIGEST] == weights_digest(_weights(pipeline["model"]))
    model, _ = load_model(pipeline["model"])
    assert torch.isfinite(model.wte.weight).all()
