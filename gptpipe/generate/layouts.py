"""The decode-time layout of every Linear: how a decoding model on the CPU reads its weights.

Batch-1 decoding multiplies one row by every weight matrix per token, so it is bound by how
fast the weights stream from memory, and torch's default matrix-vector product reaches well
below that. Three layouts compute the same product:

- `plain`: the (out, in) weight through `F.linear`, as trained;
- `packed`: the weight reordered once into oneDNN's blocked layout (`PackedLinear`). On a
  2-core AVX-512 BF16 AMD EPYC, 768x3072 took 0.27 ms plain and 0.08 ms packed in bf16, and
  GPT-2's head 8.4 against 3.8 ms; but oneDNN's fixed cost per call (~40 us) loses to the
  plain kernel on small float32 matrices there;
- `kernel`: the plain weight read by gptpipe's own C++ product for a few rows
  (`KernelLinear`, `gptpipe.generate.kernels.few_rows_linear`). On a 2-core AMX Xeon (model
  207) whose oneDNN bf16 matrix-vector product is bound by its own compute (GPT-2 124M's
  block Linears: 8.5 GB/s packed or plain), it streams them at ~12-19 GB/s.

Which is fastest differs between CPUs, dtypes and shapes, so `fastest_layout` times each one
once per process and weight shape, as decoding reads weights (distinct copies, more than the
CPU's caches hold), and `lay_out_linears` gives every Linear the winner, with one exception:
a block's Linears all take the kernel layout where it reads them nearly as fast as the
per-shape winners together (`kernel_for_blocks`), since that lets the whole step run as one
call (`gptpipe.generate.fused_step`), which saves more than the difference. The results are
those of `F.linear` on the same weights (tested), so greedy tokens do not change beyond the
float rounding of a different summation order. A prompt's prefill (many rows) goes through
the same modules: a packed Linear is not slower at large batches (a 1,024-token prefill:
12.5 against 14.2 ms plain), and a kernel Linear hands more rows than it takes to `F.linear`.

A model laid out this way decodes and does nothing else: packed Linears are not parameters
any more (so its `state_dict` no longer holds them; save the model you loaded, not the one
you decode with) and no layout is differentiable. The model module knows nothing of this:
`lay_out_linears` swaps modules from outside, by composition.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gptpipe.generate import kernels
from gptpipe.model.gpt import GPT
from gptpipe.runtime import median_seconds, native_bf16

# The Linears of a block, by attribute path; the language-model head is laid out besides.
BLOCK_LINEARS = (("attn", "c_attn"), ("attn", "c_proj"), ("mlp", "c_fc"), ("mlp", "c_proj"))
# in the order a tie is settled: the first listed wins
LAYOUTS = ("plain", "packed", "kernel")
# A block's Linears all take the kernel layout when it reads them in at most this factor of
# the per-shape fastest layouts' time. The fused step that this allows saves the module
# path's per-operation overhead, ~3.5 ms of a 17 ms GPT-2 124M token on a 2-core AMX Xeon (a
# quarter of the block Linears' time); and per-shape timings on a busy 2-core machine differ
# between runs by 10-20% (GPT-2 124M's 768x3072 on a 2-core AVX2 EPYC: the kernel timed 2.2
# ms against packed 2.8 ms in one process, 3.9 against 3.3 in the next, whose one packed
# shape left the fused step out and the token rate fell from 33 to 18 tokens/s).
FUSED_STEP_ALLOWANCE = 1.15
# the weight memory `layout_seconds` reads per timed call, at least (beyond the CPU's caches)
TIMED_WEIGHT_BYTES = 32 << 20
# and through at most this many copies (tiny weights: a model of them stays in the caches)
MAX_TIMED_COPIES = 64


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


class KernelLinear(nn.Module):
    """`nn.Linear`'s inference forward through `kernels.few_rows_linear` for up to
    `kernels.MAX_ROWS` rows (a decoding step), and `F.linear` for more (a prefill).

    Built from a Linear, whose weight it shares (a tied head stays the embedding's storage);
    the weight and bias are buffers, so the module holds no parameters. Not differentiable."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().contiguous(), persistent=False)
        bias = None if linear.bias is None else linear.bias.detach()
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in_features) -> (..., out_features), as `F.linear(x, weight, bias)`."""
        if x.numel() <= kernels.MAX_ROWS * self.in_features and x.dtype == self.weight.dtype:
            return kernels.few_rows_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel"


def layable(model: GPT) -> bool:
    """Whether `lay_out_linears` applies: a CPU model in float32, or in bfloat16 where the
    CPU computes it natively."""
    param = next(model.parameters())
    if param.device.type != "cpu":
        return False
    if param.dtype == torch.bfloat16:
        return native_bf16(param.device)
    return param.dtype == torch.float32


def available_layouts(dtype: torch.dtype) -> tuple[str, ...]:
    """The layouts a CPU Linear of `dtype` can take here: plain always; packed on a torch
    build with oneDNN; kernel where gptpipe's kernels are built."""
    found = ["plain"]
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        found.append("packed")
    if dtype in kernels.KERNEL_DTYPES and kernels.library() is not None:
        found.append("kernel")
    return tuple(found)


def laid_out(linear: nn.Linear, layout: str) -> nn.Module:
    """`linear` in `layout` (one of `LAYOUTS`)."""
    if layout == "packed":
        return PackedLinear(linear)
    if layout == "kernel":
        return KernelLinear(linear)
    if layout != "plain":
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    return linear


@functools.lru_cache(maxsize=64)
def layout_seconds(in_features: int, out_features: int, dtype: torch.dtype) -> dict[str, float]:
    """Seconds of one row through an (out, in) weight in each available layout, here and now.

    Timed as decoding reads weights: one row through each of enough distinct copies to read
    `TIMED_WEIGHT_BYTES` per call (so the weights come from memory, not from the CPU's
    caches, as a 124M model's do; at most `MAX_TIMED_COPIES`), `median_seconds` of 5 calls
    after a warm-up. The speed of a product does not depend on the values, so the weights
    are ones."""
    size = in_features * out_features * dtype.itemsize
    copies = min(MAX_TIMED_COPIES, max(1, -(-TIMED_WEIGHT_BYTES // size)))
    x = torch.ones(1, in_features, dtype=dtype)
    seconds = {}
    with torch.inference_mode():
        for layout in available_layouts(dtype):
            modules = []
            for _ in range(copies):
                # built on the meta device: no initialisation of weights about to be ones
                linear = nn.Linear(in_features, out_features, device="meta", dtype=dtype)
                linear.weight = nn.Parameter(torch.ones(out_features, in_features, dtype=dtype))
                linear.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype))
                modules.append(laid_out(linear.requires_grad_(False), layout))
            step: Callable[[], object] = functools.partial(_through_each, modules, x)
            seconds[layout] = median_seconds(step, warmups=1, calls=5)
            del modules
    return seconds


def _through_each(modules: list[nn.Module], x: torch.Tensor) -> None:
    for module in modules:
        module(x)


def fastest_layout(in_features: int, out_features: int, dtype: torch.dtype) -> str:
    """The layout `layout_seconds` times fastest for this shape (on a tie, the first of
    `LAYOUTS`)."""
    seconds = layout_seconds(in_features, out_features, dtype)
    return min(seconds, key=lambda layout: (seconds[layout], LAYOUTS.index(layout)))


def kernel_for_blocks(shapes: list[tuple[int, int]], dtype: torch.dtype) -> bool:
    """Whether a block whose Linears have these (in, out) shapes takes the kernel layout for
    all of them: the kernel is available and its `layout_seconds`, summed over the shapes, are
    at most `FUSED_STEP_ALLOWANCE` times the sum of each shape's fastest."""
    if not shapes or "kernel" not in available_layouts(dtype):
        return False
    timed = [layout_seconds(i, o, dtype) for i, o in shapes]
    kernel = sum(t["kernel"] for t in timed)
    return kernel <= FUSED_STEP_ALLOWANCE * sum(min(t.values()) for t in timed)


def lay_out_linears(model: GPT, layout: str = "fastest") -> GPT:
    """Give each block's Linears and the language-model head their decode-time layout, in
    place: per shape the `fastest_layout`, or `layout` (one of `LAYOUTS`) for every one where
    it is available. A Linear already laid out, or wrapped (by LoRA, say), is left alone.
    Returns the model, which from now on only decodes; where `layable` is false, it is
    unchanged. Under "fastest", a block's Linears all take the kernel layout where
    `kernel_for_blocks` says so (the head keeps its own fastest)."""
    if not layable(model):
        return model
    dtype = next(model.parameters()).dtype
    if layout != "fastest" and layout not in LAYOUTS:
        raise ValueError(f"layout must be fastest or one of {', '.join(LAYOUTS)}, not {layout!r}")

    def chosen(linear: nn.Module, how: str) -> nn.Module:
        if type(linear) is not nn.Linear:
            return linear
        if how == "fastest":
            return laid_out(linear, fastest_layout(linear.in_features, linear.out_features, dtype))
        return laid_out(linear, how if how in available_layouts(dtype) else "plain")

    for block in model.h:
        linears = [getattr(getattr(block, part), name) for part, name in BLOCK_LINEARS]
        shapes = [(m.in_features, m.out_features) for m in linears if type(m) is nn.Linear]
        how = "kernel" if layout == "fastest" and kernel_for_blocks(shapes, dtype) else layout
        for part, name in BLOCK_LINEARS:
            owner = getattr(block, part)
            setattr(owner, name, chosen(getattr(owner, name), how))
    if hasattr(model, "lm_head"):  # a classifier has none
        model.register_module("lm_head", chosen(model.lm_head, layout))
    return model
