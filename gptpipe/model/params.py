"""Parameter counts of a model or a config, grouped as GPT-2's modules (embeddings, attention,
MLP, norms, head), with the tied head counted once.
"""

from __future__ import annotations

import torch

from gptpipe.model.gpt import GPT, GPTConfig

# --------------------------------------------------------------------------- parameters

PARAM_GROUPS = {
    "embeddings": "Embeddings (token + position)",
    "attention": "Attention",
    "mlp": "MLP",
    "layer_norms": "Layer norms",
    "head": "Head",
}


def _group_of(name: str) -> str:
    """The group of a parameter by its GPT-2 name (wte, h.0.attn.c_attn.weight, ...)."""
    if name.startswith(("wte.", "wpe.")):
        return "embeddings"
    if ".attn." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    if name.startswith("ln_f.") or ".ln_1." in name or ".ln_2." in name:
        return "layer_norms"
    if name.startswith(("lm_head.", "score.")):
        return "head"
    raise ValueError(f"parameter {name!r} belongs to no known group")


def parameter_breakdown(model: GPT) -> dict[str, int]:
    """Parameters per group (embeddings, attention, mlp, layer_norms, head) and `total`.

    A tied language-model head shares `wte`'s weight, so it counts once, under embeddings,
    and the head group is 0; a classifier's `score` layer is the head.
    """
    counts = dict.fromkeys(PARAM_GROUPS, 0)
    for name, param in model.named_parameters():  # tied parameters appear once
        counts[_group_of(name)] += param.numel()
    counts["total"] = sum(counts[g] for g in PARAM_GROUPS)
    return counts


def config_breakdown(config: GPTConfig) -> dict[str, int]:
    """`parameter_breakdown` of the model a config describes, without allocating weights."""
    with torch.device("meta"):
        model = GPT(config)
    return parameter_breakdown(model)


def head_is_tied(config: GPTConfig) -> bool:
    """Language models tie the head to `wte`; classifiers have their own `score` head."""
    return config.n_classes == 0


def block_breakdown(config: GPTConfig) -> dict[str, int]:
    """Parameters per part, in model order: token and position embeddings, each block's norms,
    attention and MLP, the final norm, and the head (absent when tied to the embeddings)."""
    with torch.device("meta"):
        model = GPT(config)
    parts: dict[str, int] = {}
    for name, param in model.named_parameters():  # a tied head appears once, as wte
        words = name.split(".")
        if words[0] in ("wte", "wpe"):
            key = f"embeddings ({words[0]})"
        elif words[0] == "h":
            kind = {"attn": "attention", "mlp": "MLP"}.get(words[2], "norms")
            key = f"block {words[1]} {kind}"
        elif words[0] == "ln_f":
            key = "final norm"
        else:
            key = "head"
        parts[key] = parts.get(key, 0) + param.numel()
    return parts
