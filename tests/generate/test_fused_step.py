"""The fused one-token step: the model's own step to float rounding, taken where it applies
and nowhere else, and decoding through it gives the tokens decoding without it gives."""

import copy

import pytest
import torch

from gptpipe.generate import fused_step, kernels
from gptpipe.generate.beam import beam_search
from gptpipe.generate.decode import Decoding, for_decoding, generate_ids
from gptpipe.generate.fused_step import FusedStep
from gptpipe.model.gpt import GPT, GPTConfig, KVCache
from gptpipe.runtime import native_bf16

pytestmark = pytest.mark.skipif(
    kernels.library() is None, reason=f"no kernels here: {kernels.loaded()[1]}"
)
WEIGHTS = ["float32"] + (["bfloat16"] if native_bf16(torch.device("cpu")) else [])


def model(weights: str = "float32", gelu: str = "tanh", bias: bool = True, n_embd: int = 64) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=300, block_size=48, n_layer=2, n_head=2, n_embd=n_embd, gelu=gelu, bias=bias
    )
    return for_decoding(GPT(config).eval(), weights, layout="kernel")


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("gelu", "bias", "n_embd", "rows"),
    [
        ("tanh", True, 64, 1),
        ("exact", True, 64, 3),
        ("tanh", False, 40, 4),
        ("exact", False, 40, 2),
    ],
)
def test_the_fused_step_is_the_models_step(weights, cache_dtype, gelu, bias, n_embd, rows):
    """Both GELUs, with and without biases, head widths that are and are not a multiple of
    the vector width, 1 to 4 rows: the same hidden states as `hidden_states(.., last=1)` on
    a twin cache, the same keys and values stored, the same position, token after token."""
    lm = model(weights, gelu, bias, n_embd)
    fused = FusedStep.of(lm)
    assert fused is not None
    ids = torch.randint(0, 300, (rows, 14))
    ours, theirs = (KVCache(lm.config, rows, 20, dtype=cache_dtype) for _ in range(2))
    tol = 2e-5 if weights == "float32" and cache_dtype == torch.float32 else 5e-2
    with torch.inference_mode():
        lm.hidden_states(ids[:, :9], ours)
        lm.hidden_states(ids[:, :9], theirs)
        for t in range(9, 14):
            assert fused.applies(ids[:, t : t + 1], ours)
            got = fused(ids[:, t : t + 1], ours)
            want = lm.hidden_states(ids[:, t : t + 1], theirs, last=1)[:, -1]
            assert got.dtype == want.dtype and got.shape == (rows, n_embd)
            torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)
            assert ours.pos == theirs.pos == t + 1
    filled = slice(0, ours.pos)
    torch.testing.assert_close(
        ours.k[..., filled, :].float(), theirs.k[..., filled, :].float(), atol=tol, rtol=tol
    )
    torch.testing.assert_close(
        ours.v[..., filled, :].float(), theirs.v[..., filled, :].float(), atol=tol, rtol=tol
    )


def test_it_applies_only_where_it_can():
    lm = model()
    fused = FusedStep.of(lm)
    assert fused is not None
    one = torch.tensor([[5]])
    assert fused.applies(one, KVCache(lm.config, 1, 8))
    assert not fused.applies(torch.tensor([[5, 6]]), KVCache(lm.config, 1, 8))  # a prefill
    assert not fused.applies(torch.full((5, 1), 5), KVCache(lm.config, 5, 8))  # 5 rows
    padded = KVCache(lm.config, 2, 8, pad=torch.tensor([0, 2]))
    assert not fused.applies(torch.full((2, 1), 5), padded)
    full = KVCache(lm.config, 1, 8)
    full.pos = 8  # refused as the model's forward refuses it
    with pytest.raises(ValueError, match="exceed the cache's 8"):
        fused(one, full)
    with pytest.raises(ValueError, match="fused step"):
        fused(torch.tensor([[5, 6]]), KVCache(lm.config, 1, 8))
    # a model whose Linears another layout reads, a training model, a classifier: none
    assert FusedStep.of(for_decoding(GPT(lm.config).eval(), "float32", layout="plain")) is None
    assert FusedStep.of(copy.deepcopy(lm).train()) is None
    classifier = GPT(GPTConfig(vocab_size=300, block_size=48, n_layer=1, n_head=2, n_embd=64,
                               n_classes=2)).eval()  # fmt: skip
    assert FusedStep.of(classifier) is None


@pytest.mark.parametrize("weights", WEIGHTS)
def test_decoding_through_it_gives_the_same_tokens(monkeypatch, weights):
    """Greedy and beam search, one prompt and two of equal length (one cache, no padding),
    past the context (the window slides and the cache is rebuilt): the same tokens as the
    module path, on a model whose top tokens stand apart."""
    lm = model(weights)
    with torch.no_grad():  # peaked logits: a near-tie cannot differ by rounding
        lm.wte.weight.mul_(8)
    steps = []
    original = FusedStep.__call__

    def counted(self, ids, cache):
        steps.append(ids.shape)
        return original(self, ids, cache)

    d = Decoding(max_new_tokens=60, slide=8)
    prompts = [[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]]
    beams = Decoding(max_new_tokens=20, num_beams=3)
    monkeypatch.setattr(FusedStep, "__call__", counted)
    fused = (generate_ids(lm, prompts[:1], d), generate_ids(lm, prompts, d))
    fused_beams = list(beam_search(lm, prompts[0], beams))
    assert len(steps) > 60 and all(shape[1] == 1 for shape in steps)
    monkeypatch.setattr(fused_step.FusedStep, "of", classmethod(lambda cls, model: None))
    assert (generate_ids(lm, prompts[:1], d), generate_ids(lm, prompts, d)) == fused
    assert list(beam_search(lm, prompts[0], beams)) == fused_beams
