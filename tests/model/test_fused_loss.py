"""The fused head + loss against the plain `F.cross_entropy(x @ w.T, targets)` over several
chunks (N > chunk_rows, the last chunk partial), with ignored rows (-100) spread across chunks
and one chunk ignored entirely, in float32 and under bf16 autocast: the loss and both
gradients (x and the weight)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptpipe.model.fused_loss import linear_cross_entropy

N, C, V, CHUNK = 53, 24, 41, 7  # 8 chunks of 7 rows, the last one of 4


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, generator=g)
    w = torch.randn(V, C, generator=g) * 0.5
    targets = torch.randint(0, V, (N,), generator=g)
    targets[::3] = -100  # ignored rows in every chunk
    targets[14:21] = -100  # and the whole third chunk
    return x, w, targets


def loss_and_grads(fn, x, w, targets, autocast: bool):
    x, w = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = fn(x, w, targets)
    loss.backward()
    return loss.detach().float(), x.grad, w.grad


def fused(x, w, targets):
    return linear_cross_entropy(x, w, targets, chunk_rows=CHUNK)


def plain(x, w, targets):
    return F.cross_entropy(x @ w.T, targets, ignore_index=-100)


def test_the_inputs_exercise_several_chunks_and_ignored_rows():
    _, _, targets = inputs()
    chunks = targets.split(CHUNK)
    assert len(chunks) == 8 and len(chunks[-1]) == N % CHUNK
    ignored = [int((c == -100).sum()) for c in chunks]
    assert ignored[2] == CHUNK and all(
        0 < k < len(c) for k, c in zip(ignored[3:], chunks[3:], strict=True)
    )


def test_float32_equals_the_plain_loss_over_several_chunks():
    x, w, targets = inputs()
    loss, gx, gw = loss_and_grads(fused, x, w, targets, autocast=False)
    ref_loss, ref_gx, ref_gw = loss_and_grads(plain, x, w, targets, autocast=False)
    # float32 throughout, only summation order differs: a few ulps
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gw, ref_gw, rtol=1e-5, atol=1e-7)
    assert torch.all(gx[targets == -100] == 0)  # ignored rows get no gradient


@pytest.mark.parametrize("chunk_rows", [1, 7, N, 4 * N])
def test_the_chunk_size_changes_nothing_beyond_rounding(chunk_rows):
    x, w, targets = inputs(1)

    def chunked(x, w, targets):
        return linear_cross_entropy(x, w, targets, chunk_rows=chunk_rows)

    loss, gx, gw = loss_and_grads(chunked, x, w, targets, autocast=False)
    ref_loss, ref_gx, ref_gw = loss_and_grads(plain, x, w, targets, autocast=False)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gw, ref_gw, rtol=1e-5, atol=1e-7)


def test_bf16_autocast_matches_the_plain_loss_under_the_same_autocast():
    """Both compute the logits in bfloat16 (8 bits of mantissa) and the softmax in float32
    (ours stores the probabilities in bf16, the plain head rounds its gradient there); they
    differ in where products are rounded to bfloat16, so they agree to bf16 precision:
    loss within 0.2%, gradients within 1.5% of their largest entry (measured: 0.03% and
    0.4-0.6%). Both are also that close to float32."""
    x, w, targets = inputs(2)
    loss, gx, gw = loss_and_grads(fused, x, w, targets, autocast=True)
    ref_loss, ref_gx, ref_gw = loss_and_grads(plain, x, w, targets, autocast=True)
    f32_loss, f32_gx, f32_gw = loss_and_grads(plain, x, w, targets, autocast=False)
    assert gx.dtype == x.dtype and gw.dtype == w.dtype  # gradients in the parameters' dtype
    for ours, ref in ((loss, ref_loss), (loss, f32_loss)):
        torch.testing.assert_close(ours, ref, rtol=2e-3, atol=0.0)
    for ours, ref in ((gx, ref_gx), (gw, ref_gw), (gx, f32_gx), (gw, f32_gw)):
        scale = float(ref.abs().max())
        torch.testing.assert_close(ours, ref, rtol=0.0, atol=1.5e-2 * scale)
    # and bf16 really was used: not bit-equal to the float32 loss
    assert float(loss) != float(f32_loss)
