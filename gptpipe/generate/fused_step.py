"""A decoding model's one-token step in one call of the C++ library, no Python per layer.

Once the weights stream at the memory's speed (`gptpipe.generate.layouts`), what is left of
a decoding step is overhead: at GPT-2 124M's shape, the ~35 small torch operations and ~12
module calls of each block cost ~3.5 ms of a ~17 ms token on a 2-core AMX Xeon, more than
the whole cache read at position 1,000. `FusedStep` runs the step of
`GPT.hidden_states(ids, cache, last=1)` for one new token per row (the embeddings added in
torch, then every block and the final LayerNorm in `decode_kernels.cpp`) on the same
weights, cache and position bookkeeping: the same states to float rounding (activations are
float32 inside, rounded to the weights' dtype at each Linear, as the model's are; tested).

It applies where the layout chooser gave every block Linear the kernel layout (it does
where the kernel reads a block's weights about as fast as the fastest layouts:
`layouts.kernel_for_blocks`), to a cache without left padding, of 1 to 4 rows, in eval
mode. Elsewhere `FusedStep.of` is None and the model's own forward runs. Each row has its
own position (the cache's `positions`), so the server's cache, whose rows fill at their own
pace, steps through it as `generate`'s does.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from gptpipe.generate import kernels
from gptpipe.generate.layouts import KernelLinear
from gptpipe.model.gpt import GPT, KVCache

# per block, in the order of decode_kernels.cpp's Param
_BLOCK_PARAMS = (
    ("ln_1", "weight"),
    ("ln_1", "bias"),
    ("attn.c_attn", "weight"),
    ("attn.c_attn", "bias"),
    ("attn.c_proj", "weight"),
    ("attn.c_proj", "bias"),
    ("ln_2", "weight"),
    ("ln_2", "bias"),
    ("mlp.c_fc", "weight"),
    ("mlp.c_fc", "bias"),
    ("mlp.c_proj", "weight"),
    ("mlp.c_proj", "bias"),
)


class FusedStep:
    """The one-token decoding step of `model` through `kernels` (see the module docstring).

    Holds the table of the model's parameter addresses (and the tensors, so that they stay
    alive); build it with `FusedStep.of(model)` once per generation."""

    def __init__(self, model: GPT, tensors: list[torch.Tensor | None]) -> None:
        self.model = model
        self.tensors = tensors
        self.table = torch.tensor([0 if t is None else t.data_ptr() for t in tensors])
        self.dtype = next(model.parameters()).dtype

    @classmethod
    def of(cls, model: GPT) -> FusedStep | None:
        """The fused step of `model`, or None where it does not apply (see the module
        docstring)."""
        param = next(model.parameters())
        # the device first: off the CPU the C++ library is never built nor loaded
        if param.device.type != "cpu" or model.training or not hasattr(model, "lm_head"):
            return None
        dtype = param.dtype
        if dtype not in kernels.KERNEL_DTYPES or kernels.library() is None:
            return None
        tensors: list[torch.Tensor | None] = []
        for block in model.h:
            if not all(
                isinstance(block.get_submodule(path), KernelLinear)
                for path in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
            ):
                return None
            norms = (block.ln_1, block.ln_2, model.ln_f)
            if len({cast(nn.LayerNorm, norm).eps for norm in norms}) != 1:
                return None
            for path, name in _BLOCK_PARAMS:
                tensors.append(getattr(block.get_submodule(path), name))
        tensors += [model.ln_f.weight, model.ln_f.bias]
        if not all(t is None or (t.dtype == dtype and t.is_contiguous()) for t in tensors):
            return None
        return cls(model, tensors)

    def applies(self, ids: torch.Tensor, cache: KVCache) -> bool:
        """Whether this step can take `ids` (B, T) on `cache`: one token per row, 1 to 4 rows,
        no left padding, a contiguous CPU cache of a dtype the kernels read. Each row's
        position is the cache's (`cache.positions`): a cache whose rows fill at their own pace
        (the server's) applies too."""
        k = cache.k
        return (
            ids.size(1) == 1
            and 1 <= ids.size(0) <= min(kernels.MAX_ROWS, cache.batch_size)
            and cache.pad is None
            and k.dtype in kernels.KERNEL_DTYPES
            and k.device.type == "cpu"
            and k.is_contiguous()
            and cache.v.is_contiguous()
        )

    def __call__(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """The final hidden states (B, C) after one new token per row, `ids` (B, 1); the
        tokens' keys and values are stored and the cache advances, as
        `model.hidden_states(ids, cache, last=1)[:, -1]` does."""
        lib = kernels.library()
        if lib is None or not self.applies(ids, cache):
            raise ValueError("the fused step does not apply to this cache and these ids")
        model, cfg = self.model, self.model.config
        B = ids.size(0)
        cache.fits(1)
        # each row's position: the position id of its token and where its key and value go
        # (no left padding, so the two are the same)
        at = cache.positions(1)[:, 0].expand(B).contiguous()  # (B,)
        x = model.wte(ids[:, 0]) + model.wpe(at)  # (B, C)
        x = x.to(torch.float32).contiguous()
        status = lib.decode_step(
            self.table.data_ptr(),
            kernels.KERNEL_DTYPES[self.dtype],
            cache.k.data_ptr(),
            cache.v.data_ptr(),
            kernels.KERNEL_DTYPES[cache.k.dtype],
            cache.batch_size,
            cache.max_len,
            at.data_ptr(),
            cfg.n_layer,
            cfg.n_head,
            cfg.n_embd,
            B,
            model.ln_f.eps,
            int(cfg.gelu == "exact"),
            x.data_ptr(),
        )
        if status != 0:
            raise RuntimeError("the fused decoding step failed")
        cache.advance(1)
        return x.to(self.dtype)
