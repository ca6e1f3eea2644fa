"""LoRA (Hu et al. 2021, "Low-Rank Adaptation"), written on our own modules by composition.

A `LoRALinear` holds a frozen `nn.Linear` and adds a trainable low-rank update:

    y = W x + b + (alpha / r) * B A dropout(x)        A: (r, in), B: (out, r), B = 0 at start

so an adapted model starts out computing exactly what the base model computes. GPT-2's fused
query/key/value projection `c_attn` gets one adapter per projection (`groups=3`: separate
A and B for q, k and v, each over its third of the output), as a model with separate W_query,
W_key and W_value matrices would; that is the configuration whose count the book reports
(2,666,528 trainable parameters for GPT-2 124M at rank 16 with the classifier head adapted).

Nothing in `gpt.py` changes: `apply_lora` swaps the chosen Linears for wrappers in place, and
`merge_lora` folds every update back into its Linear (W += (alpha / r) * B A) and removes the
wrappers, so the result is a plain `GPT` whose model folder every command reads.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gptpipe.errors import ConfigError

# Short target names -> suffixes of the qualified module names they adapt. "head" is the
# classifier head `score`; the language-model head is tied to `wte` and cannot be merged.
TARGET_SUFFIXES = {
    "c_attn": (".attn.c_attn",),
    "c_proj": (".attn.c_proj", ".mlp.c_proj"),
    "c_fc": (".mlp.c_fc",),
    "attn.c_attn": (".attn.c_attn",),
    "attn.c_proj": (".attn.c_proj",),
    "mlp.c_fc": (".mlp.c_fc",),
    "mlp.c_proj": (".mlp.c_proj",),
    "head": ("score",),
}


class LoRALinear(nn.Module):
    """A frozen Linear plus `groups` low-rank adapters, each on an equal slice of the output.

    Shapes: A (G, r, in), B (G, out / G, r). The update of slice g is B[g] @ A[g].
    """

    def __init__(
        self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0, groups: int = 1
    ) -> None:
        super().__init__()
        if base.out_features % groups != 0:
            raise ValueError(f"out_features {base.out_features} is not divisible by {groups}")
        self.base = base
        self.rank = rank
        self.groups = groups
        self.scale = alpha / rank
        weight = base.weight
        out_per_group = base.out_features // groups
        self.lora_A = nn.Parameter(
            torch.empty(groups, rank, base.in_features, device=weight.device, dtype=weight.dtype)
        )
        self.lora_B = nn.Parameter(
            torch.zeros(groups, out_per_group, rank, device=weight.device, dtype=weight.dtype)
        )
        for g in range(groups):  # as nn.Linear initialises its weight (and the book does)
            nn.init.kaiming_uniform_(self.lora_A.data[g], a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)
        for p in base.parameters():
            p.requires_grad_(False)

    def delta_weight(self) -> torch.Tensor:
        """The update of the base weight, (alpha / r) * B A, shaped like it: (out, in)."""
        delta = torch.bmm(self.lora_B, self.lora_A)  # (G, out/G, r) @ (G, r, in) -> (G, out/G, in)
        return self.scale * delta.reshape(self.base.out_features, self.base.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # (..., out)
        z = torch.einsum("...i,gri->...gr", self.dropout(x), self.lora_A)  # (..., G, r)
        z = torch.einsum("...gr,gor->...go", z, self.lora_B)  # (..., G, out/G)
        return y + self.scale * z.reshape(*y.shape)

    def merged(self) -> nn.Linear:
        """The base Linear with the update folded into its weight (the adapters are dropped)."""
        with torch.no_grad():
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
        return self.base


def matching_modules(model: nn.Module, targets: list[str]) -> list[str]:
    """Qualified names of the Linear modules `targets` name, in model order."""
    suffixes = tuple(s for t in targets for s in TARGET_SUFFIXES.get(t, ()))
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and (name in suffixes or name.endswith(suffixes)):
            names.append(name)
    return names


def apply_lora(
    model: nn.Module,
    targets: list[str],
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    key: str = "lora_targets",
) -> list[str]:
    """Freeze every weight of `model` and wrap each targeted Linear in a LoRALinear, in place;
    returns the wrapped names. Only the adapters are left trainable. Targets that name no
    module (or the tied language-model head) are a ConfigError on `key`."""
    if "head" in targets and hasattr(model, "lm_head"):
        raise ConfigError(key, "head: a language model's head is tied to wte; adapt the blocks")
    for target in targets:
        if target not in TARGET_SUFFIXES:
            raise ConfigError(key, f"unknown module {target!r}; allowed: {sorted(TARGET_SUFFIXES)}")
        if not matching_modules(model, [target]):
            raise ConfigError(key, f"{target!r} names no module of this model")
    for p in model.parameters():
        p.requires_grad_(False)
    names = matching_modules(model, targets)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, child)
        groups = 3 if name.endswith("attn.c_attn") else 1
        setattr(parent, child, LoRALinear(base, rank, alpha, dropout, groups))
    return names


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its Linear and remove the wrappers, in place; returns `model`."""
    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name, module in wrapped:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.merged())
    return model


def adapter_parameters(model: nn.Module) -> int:
    """Parameters of the adapters alone (A and B of every LoRALinear)."""
    return sum(
        m.lora_A.numel() + m.lora_B.numel() for m in model.modules() if isinstance(m, LoRALinear)
    )
