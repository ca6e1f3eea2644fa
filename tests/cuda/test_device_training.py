"""The training path on each device: bf16 autocast, TF32, fused AdamW, the fused head + loss,
the float16 gradient scaler and torch.compile of the step.

Every test takes `device`: "cpu" always (fast, unmarked: the check's own logic runs on every
CI run) and "cuda", marked `cuda` and skipped without a GPU (`pytest -m cuda tests/cuda` on a
GPU machine; benchmarks/device_check.sh runs it). The CUDA variants have not run until a GPU
run is recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from device_cases import DEVICES, tf32, tiny_on
from helpers.training import cfg, counting_batch

from gptpipe.train.distributed import Placement, prepare
from gptpipe.train.loop import optimizer_step
from gptpipe.train.losses import lm_loss
from gptpipe.train.optim import make_optimizer, param_groups
from gptpipe.train.precision import grad_scaler

LR = 1e-3


def _step(device, dtype, loss_of=lm_loss, scaler=None, model=None):
    """One optimizer step of the tiny model in `dtype` on `device`, as the training loop
    takes it: (model, optimizer, (loss, tokens, grad norm))."""
    model = model if model is not None else tiny_on(device)
    config = cfg(dtype=dtype)
    optimizer = make_optimizer(model, config)
    out = optimizer_step(model, optimizer, config, LR, 0, counting_batch, loss_of, scaler=scaler)
    return model, optimizer, out


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_step_is_close_to_float32(device):
    """The loop runs the forward under bf16 autocast on the model's device (seen from inside
    the loss), keeps the weights in float32, and its loss and gradient norm are those of
    float32 to bf16 precision."""
    seen = []

    def loss_of(model, batch):
        seen.append((torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)))
        assert all(t.device.type == device for t in batch)  # the loop moved the batch
        return lm_loss(model, batch)

    with tf32(False):
        _, _, (loss32, _, norm32) = _step(device, "float32")
        model, _, (loss16, tokens, norm16) = _step(device, "bfloat16", loss_of)
    assert seen == [(True, torch.bfloat16)]
    assert tokens == counting_batch(0)[0].numel()
    assert loss16 == pytest.approx(loss32, rel=2e-2) and loss16 != loss32
    assert norm16 == pytest.approx(norm32, rel=5e-2)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.device.type for p in model.parameters()} == {device}


@pytest.mark.parametrize("device", DEVICES)
def test_prepare_turns_tf32_on_for_cuda_only(device):
    """The training `prepare` allows TF32 matmuls on CUDA (3-8x float32 matmul speed from
    Ampere on) and leaves the settings alone on the CPU; the model itself is what the
    forward passes go through when neither DDP nor compile applies."""
    model = tiny_on(device)
    with tf32(False):
        net = prepare(model, cfg(), Placement(torch.device(device), "float32"))
        on = device == "cuda"
        assert torch.backends.cuda.matmul.allow_tf32 is on
        assert torch.backends.cudnn.allow_tf32 is on
    assert net is model


@pytest.mark.parametrize("device", DEVICES)
def test_fused_adamw_is_chosen_and_steps_as_the_plain_loop(device):
    """make_optimizer asks for AdamW's fused kernel on every device; one step of it moves the
    weights as the per-parameter loop does (to float rounding), its state on the device."""
    model = tiny_on(device)
    config = cfg()
    fused = make_optimizer(model, config)
    assert fused.defaults["fused"] is True
    reference_model = copy.deepcopy(model)
    plain = torch.optim.AdamW(
        param_groups(reference_model, config.weight_decay),
        lr=LR,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
        foreach=False,
    )
    for m, optimizer in ((model, fused), (reference_model, plain)):
        for group in optimizer.param_groups:
            group["lr"] = LR
        with tf32(False):
            lm_loss(m, tuple(t.to(device) for t in counting_batch(0))).backward()
        optimizer.step()
    for (name, p), q in zip(model.named_parameters(), reference_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    state = fused.state[next(model.parameters())]
    assert state["exp_avg"].device.type == device
    assert float(state["step"]) == 1.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_head_and_loss_equal_the_plain_loss(device, dtype):
    """GPT.forward(with_logits=False), the chunked head + loss that training uses, against
    logits + F.cross_entropy on the same device and autocast: the loss and every gradient
    (float32: to float rounding; bf16: to bf16 precision, as tests/model/test_fused_loss)."""
    model = tiny_on(device)
    x, y = (t.to(device).clone() for t in counting_batch(0))  # y is a view of x's tensor
    y[:, :3] = -100  # ignored targets, as instruction fine-tuning's prompts
    results = []
    with tf32(False):
        for fused in (True, False):
            model.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
                _, loss = model(x, y, with_logits=not fused)
            loss.backward()
            grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
            results.append((loss.detach().float(), grads))
    (fused_loss, fused_grads), (plain_loss, plain_grads) = results
    exact = dtype == "float32"
    torch.testing.assert_close(fused_loss, plain_loss, rtol=1e-5 if exact else 2e-3, atol=0.0)
    for name, grad in plain_grads.items():
        scale = float(grad.abs().max())
        atol = 1e-6 if exact else 1.5e-2 * scale
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-4 if exact else 0, atol=atol)


@pytest.mark.parametrize("device", DEVICES)
def test_float16_gradient_scaler_unscales_before_clipping_and_skips_overflows(device):
    """dtype float16 gets a GradScaler: the loss is scaled for backward, the gradients are
    unscaled before clipping (the norm the loop reports is float32's, not 65,536x it), the
    step is taken; a scale that overflows float16 gradients skips the step (weights and
    AdamW's step count unchanged, no Diverged) and halves the scale."""
    dev = torch.device(device)
    scaler = grad_scaler(dev, "float16")
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    assert grad_scaler(dev, "bfloat16") is None and grad_scaler(dev, "float32") is None
    with tf32(False):
        _, _, (loss32, _, norm32) = _step(device, "float32")
        model, optimizer, (loss16, _, norm16) = _step(device, "float16", scaler=scaler)
    assert loss16 == pytest.approx(loss32, rel=2e-2)
    assert norm16 == pytest.approx(norm32, rel=5e-2)
    assert scaler.get_scale() == 2.0**16  # no overflow at the default scale

    scaler.load_state_dict(scaler.state_dict() | {"scale": 2.0**100})  # overflows float16
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = cfg(dtype="float16")
    loss, _, norm = optimizer_step(
        model, optimizer, config, LR, 1, counting_batch, lm_loss, scaler=scaler
    )
    assert math.isfinite(loss) and not math.isfinite(norm)
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
    assert float(optimizer.state[next(model.parameters())]["step"]) == 1.0
    assert scaler.get_scale() == 2.0**99
    state = scaler.state_dict()  # what a checkpoint's state.json stores
    assert state["scale"] == 2.0**99 and isinstance(state["_growth_tracker"], int)


def _compile_cases():
    cpu = pytest.param("cpu", "float32", marks=pytest.mark.slow, id="cpu")
    (_, cuda) = DEVICES
    return [cpu, pytest.param("cuda", "bfloat16", marks=cuda.marks, id="cuda")]


@pytest.mark.parametrize(("device", "dtype"), _compile_cases())
def test_compiled_training_step_equals_eager(device, dtype):
    """`compile: true` wraps the model in torch.compile (inductor: Triton kernels on CUDA, C++
    on the CPU); three steps through it match eager steps of the same model (its parameters
    keep their names). The CPU twin is slow (inductor's C++ build): make test-all runs it;
    tests/train/test_loop.py covers compile on the CPU in CI."""
    pytest.importorskip("torch._inductor")
    config = cfg(dtype=dtype, compile=True)
    place = Placement(torch.device(device), dtype)
    eager, compiled = tiny_on(device), tiny_on(device)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        net = prepare(compiled, config, place)  # TF32 on for CUDA: both sides alike
        assert net is not compiled and isinstance(net, torch._dynamo.eval_frame.OptimizedModule)
        losses = {}
        for name, model, through in (("eager", eager, eager), ("compiled", compiled, net)):
            optimizer = make_optimizer(model, config)
            losses[name] = [
                optimizer_step(
                    model, optimizer, config, LR, i, counting_batch, lm_loss, net=through
                )[0]
                for i in range(3)
            ]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    rel = 1e-4 if dtype == "float32" else 2e-2
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=rel)
    assert losses["compiled"][2] < losses["compiled"][0]  # it trains
    assert "_orig_mod" not in "".join(compiled.state_dict())
