"""The decode-time weight layout: every Linear of a decoding model on the CPU holds its weight
reordered once into oneDNN's blocked layout, the one its matrix kernels read fastest.

Batch-1 decoding multiplies one row by every weight matrix per token. With the plain
(out, in) layout, torch's CPU matrix-vector products run well below the memory bandwidth:
measured at GPT-2 124M's shapes on a 2-core AVX-512 BF16 machine, 768x3072 takes 0.27 ms
plain and 0.08 ms packed in bfloat16 (0.36 and 0.14 ms in float32), and the 50,257-row head
8.4 and 3.8 ms. Packed products are not slower at larger batches either (a 1,024-token
prefill: 12.5 against 14.2 ms), so a prompt's prefill keeps the same modules. The results
are those of `F.linear` on the same weights (tested), so greedy tokens do not change.

Small float32 matrices are the exception: there oneDNN's fixed cost per call (~40 us against
~10 us of torch's default kernel, at 128x384 on the machine above) outweighs the saving. So
each weight shape is timed once per process in both layouts, one row through each, and only
packed where that is faster: what pays differs between CPUs, and is measured, not assumed.

A packed model decodes and does nothing else: its Linears are not parameters any more, so it
cannot be trained, and its `state_dict` no longer holds them (save the model you loaded, not
the one you decode with). The model module knows nothing of this: `pack_linears` swaps
modules from outside, by composition.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from gptpipe.model.gpt import GPT
from gptpipe.runtime import median_seconds, native_bf16

# The Linears of a block, by attribute path; the language-model head is packed besides.
BLOCK_LINEARS = (("attn", "c_attn"), ("attn", "c_proj"), ("mlp", "c_fc"), ("mlp", "c_proj"))


class PackedLinear(nn.Module):
    """`nn.Linear`'s inference forward on a weight held in oneDNN's blocked layout.

    Built from a Linear (its weight is copied into the packed layout, so a tied weight stays
    where it is for its other user); the bias is kept as it is. Not differentiable."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        # an opaque oneDNN tensor, so a plain attribute: not a parameter, not in state_dict
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in_features) -> (..., out_features), as `F.linear(x, weight, bias)`."""
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed"


def packable(model: GPT) -> bool:
    """Whether `pack_linears` applies: a CPU model in float32, or in bfloat16 where the CPU
    computes it natively, on a torch build with oneDNN."""
    param = next(model.parameters())
    if param.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    if param.dtype == torch.bfloat16:
        return native_bf16(param.device)
    return param.dtype == torch.float32


@functools.lru_cache(maxsize=64)
def packing_pays(in_features: int, out_features: int, dtype: torch.dtype) -> bool:
    """Whether one row through a packed (out, in) weight is faster than through the plain
    one, here and now: `median_seconds` of each (7 timed calls after 2 warm-ups). The speed
    of a product does not depend on the values, so the weight is a matrix of ones (drawing
    GPT-2's head at random took longer than timing it)."""
    weight = torch.ones(out_features, in_features, dtype=dtype)
    bias, x = torch.zeros(out_features, dtype=dtype), torch.ones(1, in_features, dtype=dtype)
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1)
    with torch.inference_mode():
        plain = median_seconds(functools.partial(F.linear, x, weight, bias))
        fast = median_seconds(
            functools.partial(torch.ops.mkldnn._linear_pointwise, x, packed, bias, "none", [], "")
        )
    return fast < plain


def pack_linears(model: GPT, where_faster: bool = True) -> GPT:
    """Swap each block's Linears and the language-model head for `PackedLinear`s, in place:
    those whose shape `packing_pays` for, or every one (`where_faster=False`). A Linear that
    is already packed, or wrapped (by LoRA, say), is left alone. Returns the model, which
    from now on only decodes; where `packable` is false, it is unchanged."""
    if not packable(model):
        return model

    def packed(linear: nn.Module) -> nn.Module:
        if type(linear) is not nn.Linear:
            return linear
        shape = (linear.in_features, linear.out_features, linear.weight.dtype)
        if where_faster and not packing_pays(*shape):
            return linear
        return PackedLinear(linear)

    for block in model.h:
        for part, name in BLOCK_LINEARS:
            owner = getattr(block, part)
            setattr(owner, name, packed(getattr(owner, name)))
    if hasattr(model, "lm_head"):  # a classifier has none
        model.register_module("lm_head", packed(model.lm_head))
    return model
