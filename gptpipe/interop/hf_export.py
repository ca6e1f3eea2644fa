"""Export a model folder to the Hugging Face format: GPT-2 weights, config and tokenizer files
(`tokenizer.json`, `vocab.json`, `merges.txt`) that `transformers` loads and encodes with as we do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from gptpipe.errors import BadInput
from gptpipe.fsutil import atomic_dir, read_json
from gptpipe.interop.gpt2_formats import (
    HF_PREFIX,
    _is_conv1d,
    _materialize,
    expected_shapes,
)
from gptpipe.interop.gpt2_vocab import (
    ranks_to_vocab_merges,
)
from gptpipe.model.folder import WEIGHTS, read_info, require_language_model
from gptpipe.model.gpt import GPTConfig
from gptpipe.model.tensors import LazyTensor, lazy_tensors, write_safetensors
from gptpipe.outputs import folder_kind
from gptpipe.tokenizer.folder import META_FILE, RANKS_FILE, read_ranks
from gptpipe.tokenizer.special import EOT

# --------------------------------------------------------------------------- export to HF


def hf_config(config: GPTConfig, eot_id: int) -> dict:
    """Hugging Face `GPT2Config` (as config.json) for one of our language models."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new" if config.gelu == "tanh" else "gelu",
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "use_cache": True,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


def hf_export_tensors(ours: Mapping[str, LazyTensor], config: GPTConfig) -> dict[str, LazyTensor]:
    """Our model's tensors as `GPT2LMHeadModel` tensors, lazily; models without biases get
    zero biases (the same function: GPT-2 in Hugging Face always has them)."""
    out: dict[str, LazyTensor] = {}
    for name, shape in expected_shapes(config).items():
        transpose = _is_conv1d(name)
        hf_shape = shape[::-1] if transpose else shape
        if name in ours:
            out[HF_PREFIX + name] = LazyTensor(hf_shape, _transposed(ours[name], transpose))
        elif name.endswith(".bias") and not config.bias:
            out[HF_PREFIX + name] = LazyTensor(hf_shape, _zeros(hf_shape))
        else:
            raise BadInput(f"model weights lack {name}")
    return out


def _transposed(tensor: LazyTensor, transpose: bool) -> Callable[[], torch.Tensor]:
    def load() -> torch.Tensor:
        value = tensor.load()
        return _materialize(value.t()) if transpose else value

    return load


def _zeros(shape: tuple[int, ...]) -> Callable[[], torch.Tensor]:
    return lambda: torch.zeros(shape, dtype=torch.float32)


HF_TOKENIZER = "tokenizer.json"
HF_GENERATION = "generation_config.json"
# An earlier export, as gptpipe.outputs recognises it: a pipeline model folder has no
# generation_config.json, so an export never replaces one unasked.
HF_FOLDER = folder_kind("Hugging Face export folder", {WEIGHTS, "config.json", HF_GENERATION})


def hf_tokenizer_files(tokenizer_dir: Path, block_size: int) -> dict[str, str]:
    """The Hugging Face tokenizer files (name -> text) for one of our tokenizer folders."""
    meta_path = tokenizer_dir / META_FILE
    if not meta_path.is_file():
        raise BadInput(f"{meta_path}: not found (the model folder carries no tokenizer)")
    meta = read_json(meta_path)
    try:
        pat_str = str(meta["pat_str"])
        special = {str(k): int(v) for k, v in meta["special_tokens"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadInput(f"{meta_path}: not a tokenizer description ({exc})") from None
    if EOT not in special:
        raise BadInput(f"{meta_path}: no {EOT} special token")
    ranks = read_ranks(tokenizer_dir / RANKS_FILE)
    vocab, merges = ranks_to_vocab_merges(ranks, special)
    if len(vocab) != len(ranks) + len(special) or len(set(vocab.values())) != len(vocab):
        # vocab.json spells byte tokens in GPT-2's printable alphabet; a special token spelt
        # the same way (or two tokens sharing an id) would silently merge two entries.
        raise BadInput(
            f"{meta_path}: a special token clashes with a vocabulary token (same string or id); "
            "the tokenizer cannot be written as vocab.json"
        )
    # <|endoftext|> is GPT-2's bos/eos/unk token; the others (tokenizer.special_tokens) are
    # "additional" special tokens, so transformers treats them as special as well.
    extra = [
        token for token, _ in sorted(special.items(), key=lambda item: item[1]) if token != EOT
    ]
    merge_lines = [f"{a} {b}" for a, b in merges]
    tokenizer_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": token,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for token, i in sorted(special.items(), key=lambda item: item[1])
        ],
        "normalizer": None,
        # Our split pattern (GPT-2's or GPT-4's) first, then bytes to GPT-2's alphabet.
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": pat_str},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {
                    "type": "ByteLevel",
                    "add_prefix_space": False,
                    "trim_offsets": True,
                    "use_regex": False,
                },
            ],
        },
        "post_processor": None,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": True,
            "use_regex": False,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merge_lines,
        },
    }
    special_map: dict[str, Any] = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT}
    if extra:
        special_map["additional_special_tokens"] = extra
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        **special_map,
        "add_prefix_space": False,
        "add_bos_token": False,
        "model_max_length": block_size,
        "clean_up_tokenization_spaces": False,
    }
    return {
        HF_TOKENIZER: json.dumps(tokenizer_json, ensure_ascii=False),
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "".join(line + "\n" for line in merge_lines),
        "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
        "special_tokens_map.json": json.dumps(special_map, indent=2) + "\n",
    }


def export_hf(model_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Write `model_dir` (a language model folder) as a Hugging Face GPT-2 folder."""
    if not model_dir.is_dir():
        raise BadInput(f"{model_dir}: model folder not found")
    info = read_info(model_dir)
    config = info.config
    require_language_model(
        model_dir,
        info,
        "only language models export to the Hugging Face format (GPT2ForSequenceClassification "
        "has no head bias and finds the last token by a padding id: not the same function)",
    )
    kind = tokenizer_kind_of(model_dir)
    if kind in ("char", "word", "gpt2-subset"):
        what, why = f"tokenizer.kind {kind}", "not a byte-level BPE"
        if kind == "gpt2-subset":
            what, why = (
                "tokenizer.kind gpt2 with min_count >= 1",
                "it spells the tokens it dropped with the others",
            )
        raise BadInput(
            f"{model_dir}: {what} has no Hugging Face GPT-2 tokenizer equivalent ({why}); "
            "export works for kinds bpe, gpt2 (min_count 0) and byte"
        )
    ours = lazy_tensors(model_dir / WEIGHTS)
    tensors = hf_export_tensors(ours, config)
    tokenizer_files = hf_tokenizer_files(model_dir, config.block_size)
    eot = json.loads(tokenizer_files["vocab.json"])[EOT]
    if tokenizer_pattern(model_dir) != "gpt2":
        # Hugging Face's regex engine splits GPT-4's pattern differently from tiktoken in
        # places, so a tokenizer.json would encode some texts differently: ship none.
        tokenizer_files = {}
    with atomic_dir(out_dir) as tmp:
        write_safetensors(tmp / "model.safetensors", tensors, metadata={"format": "pt"})
        hf_cfg = hf_config(config, eot)
        (tmp / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n", encoding="utf-8")
        generation = {"bos_token_id": eot, "eos_token_id": eot}
        (tmp / HF_GENERATION).write_text(json.dumps(generation, indent=2) + "\n")
        for name, text in tokenizer_files.items():
            (tmp / name).write_text(text, encoding="utf-8")
    return {
        "model": str(model_dir),
        "out": str(out_dir),
        "format": "hf",
        "config": hf_cfg,
        "tokenizer": bool(tokenizer_files),
    }


def tokenizer_pattern(model_dir: Path) -> str:
    meta = read_json(model_dir / META_FILE)
    return str(meta.get("pattern") if isinstance(meta, dict) else None)


def tokenizer_kind_of(model_dir: Path) -> str:
    """The tokenizer kind a model folder carries (bpe for folders written before kinds)."""
    meta = read_json(model_dir / META_FILE)
    return str(meta.get("kind", "bpe") if isinstance(meta, dict) else "bpe")
