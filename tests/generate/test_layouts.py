"""The decode-time layouts: packed and kernel Linears compute what the plain ones do, and a
decoding model takes, per shape, the layout timed fastest here."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gptpipe.generate import layouts
from gptpipe.generate.decode import Decoding, for_decoding, generate_ids
from gptpipe.generate.layouts import (
    LAYOUTS,
    KernelLinear,
    PackedLinear,
    available_layouts,
    fastest_layout,
    kernel_for_blocks,
    lay_out_linears,
    layable,
    layout_seconds,
)
from gptpipe.model.gpt import GPT, GPTConfig, KVCache
from gptpipe.model.lora import apply_lora
from gptpipe.runtime import native_bf16

DTYPES = [torch.float32] + ([torch.bfloat16] if native_bf16(torch.device("cpu")) else [])
MODULES = {"packed": PackedLinear, "kernel": KernelLinear}


def small(vocab: int = 300) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=vocab, block_size=64, n_layer=2, n_head=2, n_embd=32)
    return GPT(config).eval()


def laid_out_layouts(dtype: torch.dtype) -> list[str]:
    """The layouts other than plain that this machine has for `dtype`."""
    return [layout for layout in available_layouts(dtype) if layout != "plain"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 48), (4, 48), (5, 48), (2, 7, 48), (1, 1, 48)])
def test_every_layout_is_f_linear(dtype, shape):
    """One row (a decoding step), up to the kernel's row count and beyond it (a prefill),
    with and without a bias."""
    torch.manual_seed(1)
    for layout in laid_out_layouts(dtype):
        for bias in (True, False):
            linear = nn.Linear(48, 80, bias=bias).to(dtype)
            x = torch.randn(shape, dtype=dtype)
            module = layouts.laid_out(linear, layout)
            assert isinstance(module, MODULES[layout])
            with torch.inference_mode():
                got, want = module(x), F.linear(x, linear.weight, linear.bias)
            assert got.shape == (*shape[:-1], 80) and got.dtype == dtype
            tol = 1e-5 if dtype == torch.float32 else 2e-2
            torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_laid_out_model_gives_the_same_logits_and_greedy_tokens(dtype):
    plain = small().to(dtype)
    assert layable(plain)
    ids = torch.tensor([[5, 17, 200, 2, 44, *range(10, 40)]])
    with torch.inference_mode():
        want = plain(ids)[0]
    for layout in laid_out_layouts(dtype):
        model = lay_out_linears(copy.deepcopy(plain), layout)
        assert all(isinstance(b.attn.c_attn, MODULES[layout]) for b in model.h)
        assert all(isinstance(b.mlp.c_proj, MODULES[layout]) for b in model.h)
        assert isinstance(model.lm_head, MODULES[layout])
        # the tied embedding stays a parameter, for the lookup
        assert model.wte.weight.dtype == dtype
        assert not any(k.startswith("h.0.attn.c_attn") for k in model.state_dict())
        with torch.inference_mode():
            got = model(ids)[0]
            cache = KVCache(plain.config, 1, 40, dtype=dtype)
            model.hidden_states(ids[:, :-1], cache)  # a prefill, then one token: the kernel's
            cached = model.lm_head(model.hidden_states(ids[:, -1:], cache)[:, -1])
        tol = 1e-4 if dtype == torch.float32 else 5e-2
        torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=0)
        torch.testing.assert_close(cached.float(), want[:, -1].float(), atol=tol, rtol=0)
        d = Decoding(max_new_tokens=30, slide=8)  # past the context: the window slides too
        prompt = [[3, 1, 4, 1, 5, 9, 2, 6] * 6]
        assert generate_ids(model, prompt, d) == generate_ids(plain, prompt, d), layout


def test_a_kernel_head_shares_the_embedding():
    """The tied head read by the kernel is the embedding's own storage, not a copy."""
    if "kernel" not in available_layouts(torch.float32):
        pytest.skip("no kernels here")
    model = lay_out_linears(small(), "kernel")
    assert model.lm_head.weight.data_ptr() == model.wte.weight.data_ptr()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_for_decoding_takes_the_fastest_layout_unless_told(dtype):
    """Which layout is fastest is timed on this machine, once per process and shape; the head
    follows that decision, a block's Linears too unless the kernel reads the block nearly as
    fast (then all of them take it, for the fused step); a layout asked for is taken
    everywhere."""
    plain = small()
    model = for_decoding(copy.deepcopy(plain), dtype)
    if not layable(model):
        pytest.skip("bfloat16 is not native on this CPU")
    torch_dtype = getattr(torch, dtype)

    def expected(was: nn.Linear) -> type[nn.Module]:
        seconds = layout_seconds(was.in_features, was.out_features, torch_dtype)
        assert set(seconds) == set(available_layouts(torch_dtype)) and "plain" in seconds
        fastest = fastest_layout(was.in_features, was.out_features, torch_dtype)
        assert seconds[fastest] == min(seconds.values())
        return MODULES.get(fastest, nn.Linear)

    assert type(model.lm_head) is expected(plain.lm_head)
    for got, was in zip(model.h, plain.h, strict=True):
        pairs = [(got.attn.c_attn, was.attn.c_attn), (got.attn.c_proj, was.attn.c_proj)]
        pairs += [(got.mlp.c_fc, was.mlp.c_fc), (got.mlp.c_proj, was.mlp.c_proj)]
        shapes = [(w.in_features, w.out_features) for _, w in pairs]
        if kernel_for_blocks(shapes, torch_dtype):
            assert all(type(g) is KernelLinear for g, _ in pairs)
        else:
            assert all(type(g) is expected(w) for g, w in pairs)
    assert type(for_decoding(small(), dtype, layout="plain").lm_head) is nn.Linear
    for layout in laid_out_layouts(torch_dtype):
        assert type(for_decoding(small(), dtype, layout=layout).lm_head) is MODULES[layout]


def test_blocks_take_the_kernel_within_the_allowance(monkeypatch):
    """All of a block's Linears take the kernel where it reads them within
    FUSED_STEP_ALLOWANCE of the per-shape fastest layouts together, and not beyond it."""
    if "kernel" not in available_layouts(torch.float32):
        pytest.skip("no kernels here")
    # the kernel 10% slower on the largest shape (5% over the block: inside the allowance),
    # then 40% (20%: outside it)
    for slower, takes_kernel in ((1.1, True), (1.4, False)):
        times = {
            (32, 96): {"plain": 2.0, "packed": 1.0, "kernel": 1.0},
            (32, 32): {"plain": 2.0, "packed": 1.0, "kernel": 1.0},
            (32, 128): {"plain": 4.0, "packed": 3.0, "kernel": slower * 3},
            (128, 32): {"plain": 2.0, "packed": 1.0, "kernel": 1.0},
            (32, 300): {"plain": 2.0, "packed": 1.0, "kernel": 1.5},
        }
        monkeypatch.setattr(layouts, "layout_seconds", lambda i, o, dtype, t=times: t[(i, o)])
        monkeypatch.setattr(layouts, "available_layouts", lambda dtype: LAYOUTS)
        assert kernel_for_blocks(list(times)[:4], torch.float32) is takes_kernel
        model = lay_out_linears(small(), "fastest")
        block = model.h[0]
        kinds = {type(m) for m in (block.attn.c_attn, block.mlp.c_fc, block.mlp.c_proj)}
        assert kinds == ({KernelLinear} if takes_kernel else {PackedLinear})
        assert type(model.lm_head) is PackedLinear  # the head keeps its own fastest
    assert not kernel_for_blocks([], torch.float32)


def test_a_tie_goes_to_the_first_layout(monkeypatch):
    monkeypatch.setattr(layouts, "layout_seconds", lambda *shape: dict.fromkeys(LAYOUTS, 1.0))
    assert fastest_layout(8, 8, torch.float32) == "plain"
    with pytest.raises(ValueError, match="layout"):
        lay_out_linears(small(), "sideways")


def test_wrapped_linears_are_left_alone():
    """A LoRA wrapper is not an `nn.Linear`: no layout may reach inside and drop its
    update."""
    for layout in laid_out_layouts(torch.float32):
        model = small()
        apply_lora(model, ["c_attn"], rank=2, alpha=4.0)
        wrapped = type(model.h[0].attn.c_attn)
        lay_out_linears(model, layout)
        assert type(model.h[0].attn.c_attn) is wrapped
        assert isinstance(model.h[0].mlp.c_fc, MODULES[layout])


def test_nothing_is_laid_out_off_the_cpu_or_in_an_unsupported_dtype():
    assert not layable(small().to(torch.float16))
    model = small().to(torch.float16)
    assert type(lay_out_linears(model).lm_head) is nn.Linear
