"""Generation: greedy is argmax, sampling is seeded, stop token and context cropping."""

import pytest
import torch
from helpers.gpt2 import converted, hf_model

from gptpipe.errors import BadInput
from gptpipe.generate import kernels
from gptpipe.generate.decode import (
    CachePlan,
    Decoding,
    beam_bytes,
    cache_plan,
    decoding_bytes,
    fastest_cache,
    for_decoding,
    generate_ids,
    generate_many,
    require_decoding_fits,
)
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.runtime import native_bf16


def tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()


def uncached_greedy(model: GPT, prompt: list[int], n: int, stop: int | None = None) -> list[int]:
    """Argmax after a full forward over the last block_size ids, token after token."""
    ids = list(prompt)
    for _ in range(n):
        logits, _ = model(torch.tensor([ids[-model.config.block_size :]]))
        token = int(logits[0, -1].argmax())
        if token == stop:
            break
        ids.append(token)
    return ids[len(prompt) :]


def test_greedy_is_repeated_argmax_and_crops_context():
    model = tiny()
    out = generate_ids(model, [[1, 2, 3]], Decoding(12, slide=1))[0]
    assert len(out) == 12
    assert out == uncached_greedy(model, [1, 2, 3], 12)


def test_sampling_is_reproducible_with_a_seeded_generator_and_respects_top_k():
    model = tiny()

    def run(seed: int, top_k: int = 0) -> list[int]:
        d = Decoding(20, temperature=1.0, top_k=top_k)
        return generate_ids(model, [[1]], d, torch.Generator().manual_seed(seed))[0]

    assert run(1) == run(1)
    assert run(1) != run(2)
    logits, _ = model(torch.tensor([[1]]))
    top1 = int(logits[0, -1].argmax())
    assert run(3, top_k=1)[0] == top1  # top-1 sampling is greedy


def test_stops_at_the_stop_token():
    model = tiny()
    greedy = generate_ids(model, [[1, 2]], Decoding(10))[0]
    stop = greedy[3]
    out = generate_ids(model, [[1, 2]], Decoding(10), stop_ids=[stop])[0]
    assert out == greedy[: greedy.index(stop)]


# ----------------------------------------------------------------------------- the cache


def peaked(seed: int, n_positions: int = 64, vocab_size: int = 512, scale: float = 4.0):
    """A random transformers GPT-2 with larger weights than at init: distinct argmaxes."""
    hf = hf_model(seed, n_positions=n_positions, vocab_size=vocab_size)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("weight") and ".ln_" not in name and "ln_f" not in name:
                p.mul_(scale)
    for config in (hf.config, hf.generation_config):
        config.bos_token_id = config.eos_token_id = vocab_size - 1
    return hf


def test_greedy_with_and_without_cache_is_token_identical_and_equals_transformers():
    hf = peaked(0)
    model = converted(hf)
    prompt = [5, 17, 300, 2, 44]
    d = Decoding(max_new_tokens=40)
    cached = generate_ids(model, [prompt], d)[0]
    assert cached == generate_ids(model, [prompt], d, use_cache=False)[0]
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([prompt]),
            max_new_tokens=40,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )
    assert cached == out[0, len(prompt) :].tolist()
    assert len(set(cached)) > 1  # not one token repeated


def test_batched_prompts_of_different_lengths_equal_each_prompt_alone():
    model = converted(peaked(1))
    prompts = [[1, 2, 3], [9, 8, 7, 6, 5, 4, 3, 2], [42]]
    d = Decoding(max_new_tokens=12, repetition_penalty=1.3)
    batched = generate_ids(model, prompts, d)
    assert batched == [generate_ids(model, [p], d)[0] for p in prompts]
    assert batched == generate_ids(model, prompts, d, use_cache=False)


def test_past_the_context_the_window_slides_and_the_cache_is_rebuilt():
    model = tiny()  # block_size 8
    for slide in (1, 3, 0):
        d = Decoding(max_new_tokens=30, slide=slide)
        out = generate_ids(model, [[1, 2, 3, 4, 5, 6]], d)[0]
        assert len(out) == 30
        assert out == generate_ids(model, [[1, 2, 3, 4, 5, 6]], d, use_cache=False)[0]
    # a prompt longer than the context keeps its last block_size tokens
    long = list(range(20))
    assert (
        generate_ids(model, [long], Decoding(5))[0]
        == generate_ids(model, [long[-8:]], Decoding(5))[0]
    )


def test_several_seeded_samples_per_prompt():
    model = tiny()
    d = Decoding(max_new_tokens=10, temperature=1.0, top_p=0.95)

    def draw(seed: int) -> list[list[int]]:
        return generate_ids(model, [[1, 2]] * 4, d, torch.Generator().manual_seed(seed))

    first = draw(5)
    assert first == draw(5)
    assert first != draw(6)
    assert len({tuple(r) for r in first}) > 1  # the rows are different samples


def test_many_prompts_in_batches_equal_each_prompt_decoded_alone_without_the_cache():
    """What the instruction stage's responses rely on: greedy, batched by length, each row
    stopping at its stop id, the window sliding by one at the context's end."""
    model = converted(peaked(2, n_positions=16, vocab_size=64))
    prompts = [[3, 4, 5], list(range(1, 14)), [7], [9, 2, 9, 2, 9, 2], list(range(20, 40)), [5]]
    stop = uncached_greedy(model, prompts[0], 6)[4]
    d = Decoding(max_new_tokens=12, slide=1)
    got = generate_many(model, prompts, d, stop_ids=[stop], batch_size=4)
    expected = [uncached_greedy(model, p, 12, stop) for p in prompts]
    assert got == expected
    assert any(len(r) < 12 for r in expected) and any(len(r) == 12 for r in expected)
    assert generate_many(model, prompts, d, stop_ids=[stop], batch_size=1) == expected


def test_bfloat16_decoding_stays_within_the_stated_tolerance_of_float32():
    """The tolerance `for_decoding` states: logits within a tenth of their spread (measured:
    ~0.035), and the same greedy tokens on a model whose top tokens are apart."""
    hf = peaked(0)
    fp32, bf16 = converted(hf), for_decoding(converted(hf), "bfloat16")
    assert bf16.wte.weight.dtype == torch.bfloat16 and fp32.wte.weight.dtype == torch.float32
    assert for_decoding(converted(hf), "float32").wte.weight.dtype == torch.float32
    ids = torch.tensor([[5, 17, 300, 2, 44, *range(10, 50)]])
    with torch.inference_mode():
        a, b = fp32(ids)[0].float(), bf16(ids)[0].float()
    assert float((a - b).abs().max()) < 0.1 * float(a.std())
    d = Decoding(max_new_tokens=40)
    prompt = [5, 17, 300, 2, 44]
    assert generate_ids(bf16, [prompt], d) == generate_ids(fp32, [prompt], d)
    # each decodes on the cache plan measured fastest at its shape
    cfg = bf16.config
    shape = (cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size)
    assert cache_plan(bf16) == fastest_cache(*shape, torch.bfloat16)
    assert cache_plan(fp32) == fastest_cache(*shape, torch.float32)
    assert cache_plan(fp32).dtype == torch.float32  # a float32 model never gets a bf16 cache
    cache = cache_plan(bf16).new_cache(bf16, 1, 16)
    with torch.inference_mode():
        states = bf16.hidden_states(torch.tensor([prompt]), cache)
        uncached = bf16.hidden_states(torch.tensor([prompt]))
    assert states.dtype == torch.bfloat16
    torch.testing.assert_close(states.float(), uncached.float(), atol=0.05, rtol=0)
    with pytest.raises(BadInput, match="--dtype"):
        for_decoding(fp32, "float16")


def every_plan(weights: torch.dtype) -> list[CachePlan]:
    """Each cache plan a CPU model in `weights` may decode on here."""
    dtypes = [torch.float32] + ([torch.bfloat16] if weights == torch.bfloat16 else [])
    readers = [False] + ([True] if kernels.library() is not None else [])
    return [CachePlan(dtype, kernel) for dtype in dtypes for kernel in readers]


@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16])
def test_every_cache_plan_decodes_the_same_tokens(monkeypatch, weights):
    """Whichever plan `fastest_cache` picks on this machine, every other one gives the same
    greedy tokens (a model whose top tokens are apart), prompts of different lengths in one
    batch included; the plans timed are exactly these, and the pick is one of them."""
    from gptpipe.generate import decode

    if weights == torch.bfloat16 and not native_bf16(torch.device("cpu")):
        pytest.skip("no native bf16 on this CPU")
    model = for_decoding(converted(peaked(0)), str(weights).removeprefix("torch."))
    d, prompts, tokens = Decoding(max_new_tokens=40), [[5, 17, 300, 2, 44], [9, 8]], []
    plans = every_plan(weights)
    for plan in plans:
        monkeypatch.setattr(decode, "cache_plan", lambda model, plan=plan: plan)
        tokens.append((generate_ids(model, prompts[:1], d), generate_ids(model, prompts, d)))
    assert all(t == tokens[0] for t in tokens[1:])
    cfg = model.config
    shape = (cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size)
    assert set(decode.plan_seconds(*shape, weights)) == set(plans)
    assert fastest_cache(*shape, weights) in plans


# ------------------------------------------------------------------- memory refusals


def test_decoding_bytes_is_above_the_cache_it_estimates_and_within_twice_it() -> None:
    """The estimate counts the cache `new_cache` really allocates, and the rest (logits,
    buffer, a short prompt's prefill) stays well under it for a model whose cache
    dominates, as GPT-2's does."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=64, n_layer=4, n_head=2, n_embd=32)).eval()
    plan = cache_plan(model)
    for rows, reach, prompt in ((1, 64, 4), (3, 40, 2), (5, 64, 8)):
        cache = plan.new_cache(model, rows, reach)
        allocated = cache.k.nbytes + cache.v.nbytes
        estimate = decoding_bytes(model, rows, reach, penalty=True, prefill=prompt)
        assert allocated <= estimate <= 2 * allocated, (rows, reach, estimate, allocated)
        assert beam_bytes(model, rows, reach, 8, penalty=False, prefill=prompt) > estimate


@pytest.mark.parametrize(
    ("decoding", "rows", "named"),
    [
        (Decoding(temperature=1.0), 10**9, "num_samples"),
        (Decoding(num_beams=10**9), 1, "num_beams"),
    ],
)
def test_a_decode_that_cannot_fit_is_refused_naming_the_setting(
    decoding: Decoding, rows: int, named: str
) -> None:
    with pytest.raises(BadInput) as refused:
        require_decoding_fits(lambda s: f"--{s}", tiny(), decoding, rows, prompt_tokens=3)
    message = str(refused.value)
    assert message.startswith(f"--{named}: ") and "memory" in message and "\n" not in message


def test_the_default_settings_of_gpt2_are_not_refused() -> None:
    """GPT-2 124M's whole context with every default setting of the sample stage (two
    samples per prompt) needs well under a GiB beyond its weights."""
    from gptpipe.config import SampleConfig, default_decoding
    from gptpipe.generate.samples import resolve

    gpt2 = GPTConfig()
    for entry in default_decoding():
        decoding, count = resolve(SampleConfig(), entry)
        need = decoding_bytes(gpt2, count, gpt2.block_size, penalty=True)
        assert need < 1 << 30, (entry.name, need)
        require_decoding_fits(str, gpt2, decoding, count, prompt_tokens=gpt2.block_size)
