"""GPT-2 weights in other formats, mapped to and from ours.

Two foreign formats hold the same GPT-2 weights:

- Hugging Face's (`model.safetensors` + `config.json`): tensor names `h.N.attn.c_attn.weight`
  etc., possibly prefixed `transformer.`; its `Conv1D` layers store their weight as
  (in, out), the transpose of our `nn.Linear`'s (out, in).
- OpenAI's original release (`hparams.json` + a TensorFlow checkpoint `model.ckpt.index` /
  `model.ckpt.data-00000-of-00001`): names `model/h0/attn/c_attn/w` with shape (1, in, out),
  LayerNorm gain/bias `g`/`b`. It is read here without TensorFlow: the `.index` file is a
  LevelDB-style table (SSTable) whose values are `BundleEntryProto` messages giving each
  tensor's dtype, shape and byte range in the data file.

The mappings are pure functions on names and tensors (`hf_to_ours`, `ours_to_hf`,
`tf_to_ours`). Loading is lazy, one tensor at a time (`LazyTensor`), so a 1.5B-parameter
checkpoint is converted or loaded without ever holding two copies of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from gptpipe.errors import BadInput
from gptpipe.fsutil import read_json
from gptpipe.interop.tf_checkpoint import (
    BundleEntry,
    read_bundle_index,
)
from gptpipe.model.gpt import GPTConfig
from gptpipe.model.tensors import TIED, LazyTensor, safetensors_header

HF_WEIGHTS = "model.safetensors"
HF_CONFIG = "config.json"
TF_HPARAMS = "hparams.json"
TF_INDEX = "model.ckpt.index"
TF_DATA = "model.ckpt.data-00000-of-00001"
# Conv1D weights (in, out) in the foreign formats; nn.Linear (out, in) in ours.
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Hugging Face buffers that are not weights (the causal mask of older versions).
HF_BUFFERS = (".attn.bias", ".attn.masked_bias")
HF_PREFIX = "transformer."


@dataclass
class GPT2Checkpoint:
    """A GPT-2 checkpoint (a foreign format: Hugging Face's or OpenAI's) opened for
    conversion: our config and our tensor names, lazily."""

    config: GPTConfig
    tensors: dict[str, LazyTensor]
    format: str  # "hf" or "openai-tf"
    folder: Path


# --------------------------------------------------------------------------- name maps


def _is_conv1d(name: str) -> bool:
    return name.endswith(CONV1D)


def hf_name_to_ours(name: str) -> str | None:
    """Our name for a Hugging Face tensor name, or None for buffers and the tied head."""
    name = name.removeprefix(HF_PREFIX)
    if name == TIED or name.endswith(HF_BUFFERS):
        return None
    return name


def hf_to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Hugging Face GPT-2 state dict in our format: a key map plus a transpose list.

    The result holds views (transposes are not copied); `lm_head.weight` is dropped since
    our head is tied to `wte` (`check_tied` verifies a stored head equals it).
    """
    out = {}
    for name, tensor in state.items():
        ours = hf_name_to_ours(name)
        if ours is not None:
            out[ours] = tensor.t() if _is_conv1d(ours) else tensor
    return out


def ours_to_hf(
    state: Mapping[str, torch.Tensor], prefix: str = HF_PREFIX
) -> dict[str, torch.Tensor]:
    """Our state dict in Hugging Face's `GPT2LMHeadModel` format (the inverse of `hf_to_ours`)."""
    out = {}
    for name, tensor in state.items():
        if name == TIED:
            continue
        out[prefix + name] = tensor.t() if _is_conv1d(name) else tensor
    return out


_TF_PARTS = {"g": "weight", "b": "bias", "w": "weight"}


def tf_name_to_ours(name: str) -> str | None:
    """Our name for an OpenAI TF variable (`model/h3/mlp/c_fc/w` -> `h.3.mlp.c_fc.weight`)."""
    if not name.startswith("model/"):
        return None
    parts = name.removeprefix("model/").split("/")
    if parts in (["wte"], ["wpe"]):
        return f"{parts[0]}.weight"
    match = re.fullmatch(r"h(\d+)", parts[0])
    if match:
        parts[0] = f"h.{match.group(1)}"
    if parts[-1] not in _TF_PARTS:
        return None
    parts[-1] = _TF_PARTS[parts[-1]]
    return ".".join(parts)


def tf_to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An OpenAI TF GPT-2 state in our format: names mapped, (1, in, out) -> (out, in)."""
    out = {}
    for name, tensor in state.items():
        ours = tf_name_to_ours(name)
        if ours is not None:
            out[ours] = tensor[0].t() if _is_conv1d(ours) else tensor
    return out


def expected_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of our language model for `config` (the tied head once, as `wte`)."""
    C = config.n_embd
    shapes: dict[str, tuple[int, ...]] = {}
    shapes["wte.weight"] = (config.vocab_size, C)
    shapes["wpe.weight"] = (config.block_size, C)
    for i in range(config.n_layer):
        p = f"h.{i}."
        for ln in ("ln_1", "ln_2"):
            shapes[p + ln + ".weight"] = (C,)
            shapes[p + ln + ".bias"] = (C,)
        for name, (out_f, in_f) in {
            "attn.c_attn": (3 * C, C),
            "attn.c_proj": (C, C),
            "mlp.c_fc": (4 * C, C),
            "mlp.c_proj": (C, 4 * C),
        }.items():
            shapes[p + name + ".weight"] = (out_f, in_f)
            shapes[p + name + ".bias"] = (out_f,)
    shapes["ln_f.weight"] = (C,)
    shapes["ln_f.bias"] = (C,)
    return shapes


def config_from_shapes(
    shapes: Mapping[str, tuple[int, ...]], n_head: int, where: Path
) -> GPTConfig:
    """The architecture the tensors' shapes imply (heads are not visible in shapes)."""
    try:
        vocab, n_embd = shapes["wte.weight"]
        block_size, _ = shapes["wpe.weight"]
    except (KeyError, ValueError):
        raise BadInput(f"{where}: no GPT-2 embeddings (wte, wpe) in the checkpoint") from None
    layers = {int(m.group(1)) for k in shapes if (m := re.match(r"h\.(\d+)\.", k))}
    n_layer = max(layers) + 1 if layers else 0
    if layers != set(range(n_layer)) or n_layer == 0:
        raise BadInput(f"{where}: transformer blocks are missing (found {sorted(layers)[:8]})")
    if n_head < 1 or n_embd % n_head:
        raise BadInput(f"{where}: n_head {n_head} does not divide the width {n_embd}")
    config = GPTConfig(
        vocab_size=vocab, block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd
    )
    want = expected_shapes(config)
    missing = [k for k in want if k not in shapes]
    wrong = [
        f"{k} {tuple(shapes[k])} (expected {want[k]})"
        for k in want
        if k in shapes and tuple(shapes[k]) != want[k]
    ]
    if missing or wrong:
        raise BadInput(
            f"{where}: not a GPT-2 checkpoint (missing {missing[:3]}, wrong shapes {wrong[:2]})"
        )
    return config


# --------------------------------------------------------------------------- Hugging Face


_HF_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
}


def _materialize(tensor: torch.Tensor) -> torch.Tensor:
    """A float32 contiguous copy that owns its memory (not a view into a file map)."""
    out = torch.empty(tensor.shape, dtype=torch.float32)
    out.copy_(tensor)
    return out


def open_hf(folder: Path) -> GPT2Checkpoint:
    """A Hugging Face GPT-2 folder (`GPT2LMHeadModel` or `GPT2Model`), opened lazily."""
    weights, cfg_path = folder / HF_WEIGHTS, folder / HF_CONFIG
    if not weights.is_file():
        raise BadInput(
            f"{weights}: not found (a Hugging Face GPT-2 folder holds {HF_WEIGHTS} + {HF_CONFIG}; "
            "pytorch_model.bin is not read: it needs unpickling)"
        )
    hf_cfg = _read_json(cfg_path)
    model_type = hf_cfg.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise BadInput(f"{cfg_path}: model_type {model_type!r} is not gpt2")
    _check_hf_architecture(hf_cfg, cfg_path)
    header = safetensors_header(weights)
    tensors: dict[str, LazyTensor] = {}
    head: tuple[str, tuple[int, ...]] | None = None
    for name, entry in header.items():
        if entry.get("dtype") not in _HF_DTYPES:
            raise BadInput(f"{weights}: tensor {name} has unsupported dtype {entry.get('dtype')}")
        shape = tuple(entry["shape"])
        if name.removeprefix(HF_PREFIX) == TIED:
            head = (name, shape)
        ours = hf_name_to_ours(name)
        if ours is None:
            continue
        transpose = _is_conv1d(ours)
        tensors[ours] = LazyTensor(
            shape=shape[::-1] if transpose else shape,
            load=_safetensors_loader(weights, name, transpose),
        )
    config = config_from_shapes(
        {k: v.shape for k, v in tensors.items()}, int(hf_cfg.get("n_head", 0)), weights
    )
    _check_declared(hf_cfg, config, cfg_path)
    config.gelu = HF_GELUS[hf_cfg.get("activation_function", "gelu_new")]
    if head is not None:
        check_tied(tensors["wte.weight"], _safetensors_loader(weights, head[0], False), weights)
    return GPT2Checkpoint(
        config=config, tensors=_ordered(tensors, config), format="hf", folder=folder
    )


def _safetensors_loader(path: Path, name: str, transpose: bool) -> Callable[[], torch.Tensor]:
    def load() -> torch.Tensor:
        # A fresh memory map per tensor: pages of a mapped file count as resident memory while
        # mapped, so one map kept open over the whole load would double the peak.
        with safe_open(str(path), framework="pt") as fh:
            tensor = fh.get_tensor(name)
            return _materialize(tensor.t() if transpose else tensor)

    return load


def check_tied(wte: LazyTensor, head: Callable[[], torch.Tensor], where: Path) -> None:
    """Our head is tied to the token embeddings: a stored head must equal them."""
    if not torch.equal(wte.load(), head()):
        raise BadInput(f"{where}: lm_head.weight differs from wte.weight (an untied head)")


# Hugging Face's names of the GELUs our model computes: tanh-approximated, and exact.
HF_GELUS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "exact"}


def _check_hf_architecture(cfg: Mapping, path: Path) -> None:
    """Refuse GPT-2 variants whose computation our model does not reproduce."""
    problems = []
    n_embd = cfg.get("n_embd", 768)
    if cfg.get("n_inner") not in (None, 4 * n_embd):
        problems.append(f"n_inner {cfg.get('n_inner')} (ours is 4 * n_embd)")
    if cfg.get("activation_function", "gelu_new") not in HF_GELUS:
        problems.append(f"activation_function {cfg.get('activation_function')!r}")
    if abs(float(cfg.get("layer_norm_epsilon", 1e-5)) - 1e-5) > 1e-12:
        problems.append(f"layer_norm_epsilon {cfg.get('layer_norm_epsilon')}")
    if cfg.get("scale_attn_by_inverse_layer_idx", False):
        problems.append("scale_attn_by_inverse_layer_idx")
    if not cfg.get("scale_attn_weights", True):
        problems.append("scale_attn_weights false")
    if cfg.get("add_cross_attention", False):
        problems.append("add_cross_attention")
    if problems:
        raise BadInput(f"{path}: unsupported GPT-2 variant: {', '.join(problems)}")


def _check_declared(cfg: Mapping, config: GPTConfig, path: Path) -> None:
    """config.json must agree with the shapes (which decide)."""
    for key, value in (
        ("vocab_size", config.vocab_size),
        ("n_positions", config.block_size),
        ("n_embd", config.n_embd),
        ("n_layer", config.n_layer),
        ("n_vocab", config.vocab_size),
        ("n_ctx", config.block_size),
    ):
        if key in cfg and cfg[key] != value:
            raise BadInput(f"{path}: {key} is {cfg[key]} but the weights' shapes say {value}")


def _read_json(path: Path) -> dict:
    data = read_json(path)
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object")
    return data


def _ordered(tensors: dict[str, LazyTensor], config: GPTConfig) -> dict[str, LazyTensor]:
    """Our tensors in model order, extras (none expected) dropped."""
    return {k: tensors[k] for k in expected_shapes(config)}


def _tf_loader(
    data: Path, entry: BundleEntry, name: str, transpose: bool
) -> Callable[[], torch.Tensor]:
    def load() -> torch.Tensor:
        raw = torch.empty(entry.shape, dtype=entry.dtype)
        buffer = raw.view(torch.uint8).numpy().data.cast("B") if raw.numel() else b""
        with open(data, "rb") as fh:
            fh.seek(entry.offset)
            if raw.numel() and fh.readinto(buffer) != entry.size:
                raise BadInput(f"{data}: truncated (tensor {name})")
        tensor = raw[0] if transpose else raw
        tensor = tensor.t() if transpose else tensor
        if tensor.dtype == torch.float32 and tensor.is_contiguous():
            return tensor
        return _materialize(tensor)

    return load


def open_tf(folder: Path) -> GPT2Checkpoint:
    """OpenAI's original GPT-2 release folder (hparams.json + TF checkpoint), opened lazily."""
    hparams = _read_json(folder / TF_HPARAMS)
    shards, entries = read_bundle_index(folder / TF_INDEX)
    tensors: dict[str, LazyTensor] = {}
    for name, entry in entries.items():
        ours = tf_name_to_ours(name)
        if ours is None:
            continue
        data = folder / f"model.ckpt.data-{entry.shard:05d}-of-{shards:05d}"
        if not data.is_file():
            raise BadInput(f"{data}: not found (data shard of {folder / TF_INDEX})")
        itemsize = torch.empty((), dtype=entry.dtype).element_size()
        numel = 1
        for d in entry.shape:
            numel *= d
        if entry.size != numel * itemsize or entry.offset + entry.size > data.stat().st_size:
            raise BadInput(f"{folder / TF_INDEX}: tensor {name} has an impossible byte range")
        transpose = _is_conv1d(ours)
        if transpose:
            if len(entry.shape) != 3 or entry.shape[0] != 1:
                raise BadInput(
                    f"{folder / TF_INDEX}: {name} has shape {entry.shape}, not (1, in, out)"
                )
            shape: tuple[int, ...] = (entry.shape[2], entry.shape[1])
        else:
            shape = entry.shape
        tensors[ours] = LazyTensor(shape=shape, load=_tf_loader(data, entry, name, transpose))
    config = config_from_shapes(
        {k: v.shape for k, v in tensors.items()}, int(hparams.get("n_head", 0)), folder / TF_INDEX
    )
    _check_declared(hparams, config, folder / TF_HPARAMS)
    return GPT2Checkpoint(
        config=config, tensors=_ordered(tensors, config), format="openai-tf", folder=folder
    )


def open_gpt2_checkpoint(folder: Path) -> GPT2Checkpoint:
    """A GPT-2 checkpoint folder in either foreign format, told apart by its files."""
    if not folder.is_dir():
        raise BadInput(f"{folder}: checkpoint folder not found")
    if (folder / HF_WEIGHTS).is_file():
        return open_hf(folder)
    if (folder / TF_INDEX).is_file():
        return open_tf(folder)
    raise BadInput(
        f"{folder}: no GPT-2 checkpoint: expected {HF_WEIGHTS} + {HF_CONFIG} (Hugging Face) "
        f"or {TF_HPARAMS} + {TF_INDEX} + {TF_DATA} (OpenAI)"
    )
