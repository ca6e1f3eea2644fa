"""The KV-cache decoder on each device: equal to the forward without a cache, a cache in the
weights' dtype off the CPU, and gptpipe's C++ kernels (decode_kernels.cpp, CPU-only) never
built nor loaded there.

`device`: "cpu" always (unmarked) and "cuda", marked `cuda` and skipped without a GPU.
"""

from __future__ import annotations

import pytest
import torch
from device_cases import DEVICES, tf32, tiny_on

from gptpipe.decoding import Decoding
from gptpipe.generate import kernels
from gptpipe.generate.decode import cache_plan, for_decoding, generate_ids, next_logits
from gptpipe.generate.fused_step import FusedStep

PROMPTS = [[5, 6, 7, 8, 9], [40, 41]]  # two lengths: the second row is left-padded


def _kernel_calls() -> int:
    """How often the kernels were asked for (`kernels.loaded` is the one way to them: it
    builds the library on its first call and caches it)."""
    info = kernels.loaded.cache_info()
    return info.hits + info.misses


def _cases():
    (_, cuda) = DEVICES
    cuda_marks = cuda.marks
    return [
        pytest.param("cpu", "float32", id="cpu-float32"),
        pytest.param("cuda", "float32", marks=cuda_marks, id="cuda-float32"),
        pytest.param("cuda", "bfloat16", marks=cuda_marks, id="cuda-bfloat16"),
    ]


@pytest.mark.parametrize(("device", "dtype"), _cases())
def test_cached_decoding_equals_the_uncached_forward_and_builds_no_kernel_off_the_cpu(
    device, dtype
):
    """Greedy tokens with the cache equal those recomputing the whole window every step
    (float32), the cached step's logits equal the full forward's (bf16 to its precision), the
    cache is in the weights' dtype and read by torch off the CPU, and decoding on CUDA never
    asks for the C++ library (on the CPU it does: the counter is seen to work)."""
    calls = _kernel_calls()
    model = for_decoding(tiny_on(device).eval(), dtype, layout="plain")
    param = next(model.parameters())
    assert param.device.type == device and param.dtype == getattr(torch, dtype)
    plan = cache_plan(model)
    if device != "cpu":
        assert plan.dtype == param.dtype and not plan.kernel
        assert FusedStep.of(model) is None
    decoding = Decoding(max_new_tokens=12, temperature=0.0)
    with tf32(False):
        cached = generate_ids(model, PROMPTS, decoding, use_cache=True)
        uncached = generate_ids(model, PROMPTS, decoding, use_cache=False)
        ids = torch.tensor([PROMPTS[0]], device=device)
        with torch.inference_mode():
            cache = plan.new_cache(model, 1, 16)
            next_logits(model, ids[:, :-1], cache)  # the prefill
            stepped = next_logits(model, ids[:, -1:], cache).float()  # one cached step
            full = model.lm_head(model.hidden_states(ids)[:, -1]).float()
    assert cache.k.device.type == device and cache.k.dtype == plan.dtype
    assert [len(row) for row in cached] == [12, 12]
    if dtype == "float32":
        assert cached == uncached
        torch.testing.assert_close(stepped, full, rtol=1e-4, atol=1e-4)
    else:  # bf16 weights and cache: rounding differs between the two paths
        torch.testing.assert_close(stepped, full, rtol=0.0, atol=0.05 * float(full.abs().max()))
    asked = _kernel_calls() - calls
    assert (asked > 0) if device == "cpu" else (asked == 0)


@pytest.mark.parametrize("device", DEVICES)
def test_sampled_decoding_with_a_cpu_generator_runs_on_the_device(device):
    """The CLI's seeded sampling draws with a CPU generator whatever the device: the same
    seed gives the same tokens, on the model's device."""
    model = for_decoding(tiny_on(device).eval(), "float32", layout="plain")
    decoding = Decoding(max_new_tokens=6, temperature=1.0, top_k=10)
    runs = [
        generate_ids(model, PROMPTS, decoding, torch.Generator(device="cpu").manual_seed(7))
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and all(len(row) == 6 for row in runs[0])
