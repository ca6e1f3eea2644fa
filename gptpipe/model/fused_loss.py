"""The language-model head and cross-entropy fused, a chunk of rows at a time: the same loss as
`F.cross_entropy(x @ weight.T, targets)` without ever holding the (N, V) logits.

Pure PyTorch, like the model it serves.
"""

from __future__ import annotations

from typing import Any

import torch

# --------------------------------------------------------------------------- fused head + loss


def linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int = 512
) -> torch.Tensor:
    """mean_i cross_entropy(x_i @ weight^T, targets_i) over targets != -100, chunk by chunk.

    x (N, C), weight (V, C), targets (N,). Equal to `F.cross_entropy(x @ weight.T, targets,
    ignore_index=-100)`, but the gradients are computed in the forward pass, `chunk_rows` rows
    at a time: with GPT-2's vocabulary the (N, V) logits are the largest tensors of a step by
    far, and making them, softmax-ing them and back-propagating through them at full size costs
    more memory traffic (and page faults) than the matmuls. Under autocast the two matmuls run
    in the autocast dtype and the softmax computes in float32, as the unfused head does. 512
    rows of GPT-2's vocabulary (100 MB of float32 probabilities) measured best on a 2-core
    AVX-512 CPU.

    Under bf16 the probabilities are stored in bf16, the dtype the gradient's matmuls take
    them in anyway: a float32 copy written, read and cast per chunk was a sixth of a seed001
    step on a 2-core AMX Xeon. The loss then comes from a bf16 probability, within 0.4% of
    it (a few thousandths of a nat per token, either way). float16's range would round small
    probabilities to zero, so it keeps them in float32.
    """
    device_type = x.device.type
    dtype = (
        torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    )
    return _LinearCrossEntropy.apply(x, weight, targets, chunk_rows, dtype)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,  # torch's FunctionCtx, untyped: needs_input_grad, save_for_backward
        x: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        chunk_rows: int,
        dtype: torch.dtype | None,
    ) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            compute = dtype or x.dtype
            xc, wc = x.to(compute), weight.to(compute)
            valid = targets != -100  # (N,)
            count = valid.sum().clamp_min(1).to(torch.float32)
            safe = torch.where(valid, targets, 0)
            grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
            grad_w = (
                torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
            )
            total = torch.zeros((), dtype=torch.float32, device=x.device)
            all_valid = bool(valid.all())
            stored = torch.bfloat16 if compute == torch.bfloat16 else torch.float32
            for s in range(0, x.size(0), chunk_rows):
                xs, ts = xc[s : s + chunk_rows], safe[s : s + chunk_rows, None]
                # one fused pass: (n, V) logits in `compute` -> probabilities in `stored`
                probs = torch.softmax(xs @ wc.t(), dim=-1, dtype=stored)
                losses = -probs.gather(1, ts).squeeze(1).float().log()  # (n,)
                vs = None if all_valid else valid[s : s + chunk_rows]
                total += losses.sum() if vs is None else (losses * vs).sum()
                if grad_x is None and grad_w is None:
                    continue
                # d(sum of losses)/d(logits) = softmax - one_hot, zero on ignored rows; one
                # element per row changes (scatter_add_ on bf16 would copy the whole chunk to
                # float32 and back)
                rows = torch.arange(ts.size(0), device=x.device)
                probs[rows, ts[:, 0]] -= 1.0
                if vs is not None:
                    probs.mul_(vs[:, None])
                g = probs.to(compute)
                if grad_x is not None:
                    grad_x[s : s + chunk_rows] = g @ wc
                if grad_w is not None:
                    grad_w += g.t() @ xs
            ctx.save_for_backward(grad_x, grad_w, count)
            return total / count

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_x, grad_w, count = ctx.saved_tensors
        scale = grad_out / count
        gx = grad_x * scale.to(grad_x.dtype) if grad_x is not None else None
        gw = grad_w * scale if grad_w is not None else None
        return gx, gw, None, None, None
