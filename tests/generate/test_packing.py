"""The decode-time weight layout: packed Linears compute what the plain ones do."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gptpipe.generate.decode import Decoding, for_decoding, generate_ids
from gptpipe.generate.packing import PackedLinear, pack_linears, packable, packing_pays
from gptpipe.model.gpt import GPT, GPTConfig, KVCache
from gptpipe.model.lora import apply_lora
from gptpipe.runtime import native_bf16

needs_onednn = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN"
)
DTYPES = [torch.float32] + ([torch.bfloat16] if native_bf16(torch.device("cpu")) else [])


def small(vocab: int = 300) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=vocab, block_size=64, n_layer=2, n_head=2, n_embd=32)
    return GPT(config).eval()


@needs_onednn
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 48), (5, 48), (2, 7, 48)])
def test_packed_linear_is_f_linear(dtype, shape):
    torch.manual_seed(1)
    for bias in (True, False):
        linear = nn.Linear(48, 80, bias=bias).to(dtype)
        x = torch.randn(shape, dtype=dtype)
        packed = PackedLinear(linear)
        with torch.inference_mode():
            got, want = packed(x), F.linear(x, linear.weight, linear.bias)
        assert got.shape == (*shape[:-1], 80) and got.dtype == dtype
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)


@needs_onednn
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_packed_model_gives_the_same_logits_and_greedy_tokens(dtype):
    plain = small().to(dtype)
    packed = pack_linears(copy.deepcopy(plain), where_faster=False)
    assert packable(plain)
    assert all(isinstance(b.attn.c_attn, PackedLinear) for b in packed.h)
    assert all(isinstance(b.mlp.c_proj, PackedLinear) for b in packed.h)
    assert isinstance(packed.lm_head, PackedLinear)
    # the packed head is a copy: the tied embedding stays a parameter, for the lookup
    assert packed.wte.weight.dtype == dtype
    assert not any(k.startswith("h.0.attn.c_attn") for k in packed.state_dict())
    ids = torch.tensor([[5, 17, 200, 2, 44, *range(10, 40)]])
    with torch.inference_mode():
        want, got = plain(ids)[0], packed(ids)[0]
        cache = KVCache(plain.config, 1, 40, dtype=dtype)
        cached = packed.lm_head(packed.hidden_states(ids, cache)[:, -1])
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=0)
    torch.testing.assert_close(cached.float(), want[:, -1].float(), atol=tol, rtol=0)
    d = Decoding(max_new_tokens=30, slide=8)  # past the context: the window slides too
    prompt = [[3, 1, 4, 1, 5, 9, 2, 6] * 6]
    assert generate_ids(packed, prompt, d) == generate_ids(plain, prompt, d)


@needs_onednn
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_for_decoding_packs_where_it_pays_unless_told_not_to(dtype):
    """Which shapes pay is timed on this machine, once per process; every Linear follows
    that decision."""
    plain = small()
    model = for_decoding(copy.deepcopy(plain), dtype)
    if not packable(model):
        pytest.skip("bfloat16 is not native on this CPU")
    pairs = [(model.lm_head, plain.lm_head)]
    for got, was in zip(model.h, plain.h, strict=True):
        pairs += [(got.attn.c_attn, was.attn.c_attn), (got.mlp.c_proj, was.mlp.c_proj)]
    for got, was in pairs:
        pays = packing_pays(was.in_features, was.out_features, getattr(torch, dtype))
        assert isinstance(got, PackedLinear) if pays else type(got) is nn.Linear
    assert type(for_decoding(small(), dtype, pack=False).lm_head) is nn.Linear


@needs_onednn
def test_wrapped_linears_are_left_alone():
    """A LoRA wrapper is not an `nn.Linear`: packing must not reach inside and drop its
    update."""
    model = small()
    apply_lora(model, ["c_attn"], rank=2, alpha=4.0)
    wrapped = type(model.h[0].attn.c_attn)
    pack_linears(model, where_faster=False)
    assert type(model.h[0].attn.c_attn) is wrapped
    assert isinstance(model.h[0].mlp.c_fc, PackedLinear)


def test_nothing_is_packed_off_the_cpu_or_in_an_unsupported_dtype():
    assert not packable(small().to(torch.float16))
    model = small().to(torch.float16)
    assert type(pack_linears(model).lm_head) is nn.Linear
