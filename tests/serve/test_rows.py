"""The server's row cache: rows of different lengths step together as each would alone,
through torch's masked attention, the cache kernel, and the fused step."""

from __future__ import annotations

import pytest
import torch

from gptpipe.generate import kernels
from gptpipe.generate.decode import for_decoding, next_logits
from gptpipe.generate.fused_step import FusedStep
from gptpipe.model.gpt import GPT, GPTConfig, KVCache
from gptpipe.serve.rows import RowCache

CONFIG = GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=64)
LENGTHS = (3, 11, 1, 20)  # the prompts' lengths, one row each
PATHS = ["torch"] + (["kernel", "fused"] if kernels.library() is not None else [])


def model(path: str) -> GPT:
    torch.manual_seed(0)
    layout = "kernel" if path == "fused" else "plain"
    return for_decoding(GPT(CONFIG).eval(), "float32", layout=layout)


@pytest.mark.parametrize("path", PATHS)
@torch.inference_mode()
def test_rows_of_different_lengths_step_as_each_alone(path: str) -> None:
    lm = model(path)
    fused = FusedStep.of(lm) if path == "fused" else None
    assert (fused is not None) == (path == "fused")
    cache = RowCache(CONFIG, rows=5, kernel=path != "torch")
    alone: list[KVCache] = []
    generator = torch.Generator().manual_seed(1)
    for row, n in enumerate(LENGTHS):
        own = KVCache(CONFIG, 1)
        lm.hidden_states(torch.randint(0, 300, (1, n), generator=generator), own)
        alone.append(own)
        cache.place(row, own)
        cache.active += 1
    own_copies = [KVCache(CONFIG, 1) for _ in alone]
    for copy, own in zip(own_copies, alone, strict=True):
        copy.k.copy_(own.k), copy.v.copy_(own.v)
        copy.pos = own.pos
    for _ in range(6):  # the rows' lengths stay apart while each grows
        tokens = torch.randint(0, 300, (len(LENGTHS), 1), generator=generator)
        together = next_logits(lm, tokens, cache, fused)
        for row, own in enumerate(own_copies):
            expected = lm.lm_head(lm.hidden_states(tokens[row : row + 1], own, last=1)[:, -1])
            torch.testing.assert_close(together[row : row + 1], expected, atol=1e-5, rtol=1e-5)
    assert cache.lengths[: len(LENGTHS)] == [n + 6 for n in LENGTHS]


def test_a_new_row_cache_holds_no_garbage() -> None:
    """A shorter row's step reads (masked) the positions past its length: they must be finite
    from the start, since 0 x NaN is NaN."""
    cache = RowCache(CONFIG, rows=3, dtype=torch.bfloat16)
    assert not cache.k.any() and not cache.v.any()


def test_a_finished_row_is_filled_by_the_last_active_one() -> None:
    cache = RowCache(CONFIG, rows=3)
    for row in range(3):
        cache.k[:, row] = row
        cache.lengths[row] = 4 + row
    cache.copy_row(2, 0)
    assert cache.lengths[0] == 6 and bool((cache.k[:, 0, :, :6] == 2).all())
