"""The GPT module: shapes, causality, attention paths, initialisation, purity."""

import ast
from pathlib import Path

import pytest
import torch

from gptpipe.model import fused_loss
from gptpipe.model import gpt as model_module
from gptpipe.model.gpt import GPT, GPTConfig, KVCache, attention_reference

TINY = GPTConfig(vocab_size=97, block_size=16, n_layer=2, n_head=4, n_embd=32)


def tiny(**changes) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY.to_dict(), **changes})).eval()


def test_logits_shape_and_loss_at_init_is_near_uniform():
    model = tiny()
    idx = torch.randint(0, 97, (3, 16))
    logits, loss = model(idx, torch.randint(0, 97, (3, 16)))
    assert logits.shape == (3, 16, 97)
    # GPT-2 init: predictions start close to uniform, so the loss is close to ln(V).
    assert abs(loss.item() - torch.log(torch.tensor(97.0)).item()) < 0.3


def test_changing_a_future_token_leaves_earlier_logits_unchanged():
    model = tiny()
    idx = torch.randint(0, 97, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % 97
    before, _ = model(idx)
    after, _ = model(changed)
    torch.testing.assert_close(before[:, :10], after[:, :10], rtol=0, atol=0)
    assert not torch.allclose(before[:, 10:], after[:, 10:])


def test_sdpa_path_equals_reference_attention_and_captures_weights():
    model = tiny()
    idx = torch.randint(0, 97, (2, 16))
    fast, _ = model(idx)
    captured: list[torch.Tensor] = []
    slow, _ = model(idx, attention=captured)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    assert len(captured) == 2  # one per layer, nothing stashed on the modules
    weights = captured[0]
    assert weights.shape == (2, 4, 16, 16)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 16))
    assert torch.all(weights.triu(1) == 0)  # no weight on the future
    assert not any(hasattr(m, "last_weights") for m in model.modules())


def test_cache_prefill_then_one_token_at_a_time_equals_the_full_forward():
    model = tiny()
    idx = torch.randint(0, 97, (2, 16))
    full, _ = model(idx)
    cache = KVCache(model.config, batch_size=2)
    first, _ = model(idx[:, :5], kv_cache=cache)  # a prompt: one batched forward
    steps = [first]
    for t in range(5, 16):
        logits, _ = model(idx[:, t : t + 1], kv_cache=cache)
        steps.append(logits)
    assert cache.pos == 16
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="exceed"):
        model(idx[:, :1], kv_cache=cache)  # the cache is full
    storage = cache.k.data_ptr()
    cache.reset()
    again, _ = model(idx[:, :5], kv_cache=cache)
    assert cache.k.data_ptr() == storage  # reused, not reallocated
    torch.testing.assert_close(again, first, rtol=0, atol=0)


def test_the_cache_never_reads_a_position_it_has_not_written():
    """The cache is allocated uninitialised: NaN in every unwritten slot changes nothing,
    with left padding, one token at a time, after a reset and after a beam reorder."""
    model = tiny()
    short, long = torch.randint(0, 97, (1, 4)), torch.randint(0, 97, (1, 9))
    batch = torch.cat([torch.cat([torch.zeros(1, 5, dtype=torch.long), short], 1), long])
    steps = torch.randint(0, 97, (2, 4))

    def run(cache: KVCache) -> torch.Tensor:
        out = [model(batch, kv_cache=cache)[0][:, -1]]
        for t in range(4):
            if t == 2:
                cache.reorder(torch.tensor([0, 1]))
            out.append(model(steps[:, t : t + 1], kv_cache=cache)[0][:, -1])
        return torch.stack(out, 1)

    clean = KVCache(model.config, batch_size=2, max_len=13, pad=torch.tensor([5, 0]))
    clean.k.zero_()
    clean.v.zero_()
    poisoned = KVCache(model.config, batch_size=2, max_len=13, pad=torch.tensor([5, 0]))
    poisoned.k.fill_(float("nan"))
    poisoned.v.fill_(float("nan"))
    expected = run(clean)
    torch.testing.assert_close(run(poisoned), expected, rtol=0, atol=0)
    poisoned.reset(pad=torch.tensor([5, 0]))
    poisoned.k[:, :, :, 9:].fill_(float("nan"))  # stale values past the new prompt
    torch.testing.assert_close(run(poisoned), expected, rtol=0, atol=0)


def test_last_positions_only_equal_the_tail_of_the_full_states():
    """`last=n` (scoring a window's tail, predicting after a prompt) runs the last block's MLP
    on n positions only: the same states as slicing the full result, cached or not."""
    model = tiny()
    idx = torch.randint(0, 97, (2, 16))
    full = model.hidden_states(idx)
    for n in (1, 7, 16, 20):
        tail = model.hidden_states(idx, last=n)
        assert tail.shape == (2, min(n, 16), 32)
        torch.testing.assert_close(tail, full[:, -n:], rtol=1e-6, atol=1e-6)
    cache = KVCache(model.config, batch_size=2)
    prefill = model.hidden_states(idx[:, :9], cache, last=1)
    step = model.hidden_states(idx[:, 9:10], cache)
    torch.testing.assert_close(prefill[:, 0], full[:, 8], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step[:, 0], full[:, 9], rtol=1e-5, atol=1e-5)  # cache complete
    with pytest.raises(ValueError, match="last"):
        model.hidden_states(idx, last=-1)


def test_left_padded_rows_equal_each_row_alone():
    model = tiny()
    short, long = torch.randint(0, 97, (1, 4)), torch.randint(0, 97, (1, 9))
    batch = torch.cat([torch.cat([torch.zeros(1, 5, dtype=torch.long), short], 1), long])
    cache = KVCache(model.config, batch_size=2, pad=torch.tensor([5, 0]))
    logits, _ = model(batch, kv_cache=cache)
    step, _ = model(torch.tensor([[3], [4]]), kv_cache=cache)
    alone_short, _ = model(torch.cat([short, torch.tensor([[3]])], 1))
    alone_long, _ = model(torch.cat([long, torch.tensor([[4]])], 1))
    assert not torch.isnan(logits).any()
    torch.testing.assert_close(logits[0, 5:], alone_short[0, :4], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step[0, 0], alone_short[0, 4], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step[1, 0], alone_long[0, 9], rtol=1e-5, atol=1e-5)
    captured: list[torch.Tensor] = []
    cache.reset(pad=torch.tensor([5, 0]))
    model(batch, kv_cache=cache, attention=captured)
    assert torch.all(captured[0][0, :, 5:, :5] == 0)  # no real token attends to padding


def test_training_path_is_unchanged_by_the_cache_code():
    """The default forward (no cache) is the plain causal SDPA path, bit for bit."""
    model = tiny()
    idx = torch.randint(0, 97, (2, 16))
    x = model.drop(model.wte(idx) + model.wpe(torch.arange(16)))
    for block in model.h:
        a = block.ln_1(x)
        B, T, C = a.shape
        q, k, v = block.attn.c_attn(a).split(C, dim=2)
        q, k, v = (t.view(B, T, 4, C // 4).transpose(1, 2) for t in (q, k, v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + block.attn.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        x = x + block.mlp(block.ln_2(x))
    expected = model.lm_head(model.ln_f(x))
    torch.testing.assert_close(model(idx)[0], expected, rtol=0, atol=0)


def test_the_exact_gelu_is_torchs_erf_gelu_and_close_to_gpt2s_tanh():
    idx = torch.randint(0, 97, (2, 16))
    tanh, exact = tiny(), tiny(gelu="exact")
    x = torch.randn(3, 5, 32)
    mlp = exact.h[0].mlp
    expected = mlp.c_proj(torch.nn.GELU()(mlp.c_fc(x)))  # nn.GELU's default: erf, as nanoGPT
    torch.testing.assert_close(mlp(x), expected, rtol=0, atol=0)
    a, b = tanh(idx)[0], exact(idx)[0]  # same weights (same seed), a different curve
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="gelu"):
        GPTConfig(gelu="relu")


def test_bf16_training_attention_equals_float32_attention_cast_back():
    """Under CPU bf16 autocast, training attention runs in float32 (its bf16 backward is
    slow): the same values as float32 SDPA on the bf16 inputs, and gradients flow."""
    model = tiny()
    model.train()
    attn = model.h[0].attn
    x = torch.randn(2, 16, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attn(x)
        q, k, v = attn.c_attn(x).split(32, dim=2)
    assert y.dtype == torch.bfloat16
    q, k, v = (t.view(2, 16, 4, 8).transpose(1, 2).float() for t in (q, k, v))
    z = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = attn.c_proj(z.to(torch.bfloat16).transpose(1, 2).reshape(2, 16, 32))
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    y.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_reference_attention_matches_sdpa_directly():
    q, k, v = (torch.randn(2, 3, 7, 8) for _ in range(3))
    out, _ = attention_reference(q, k, v)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_head_is_tied_to_token_embedding():
    model = tiny()
    assert model.lm_head.weight is model.wte.weight


def test_gpt2_small_parameter_count_and_names():
    with torch.device("meta"):
        model = GPT(GPTConfig())
    # GPT-2 124M: 124,439,808 parameters with the tied head counted once.
    assert model.num_params(non_embedding=False) == 124_439_808
    names = {name for name, _ in model.named_parameters()}
    for expected in (
        "wte.weight",
        "wpe.weight",
        "h.0.attn.c_attn.weight",
        "h.11.mlp.c_proj.bias",
        "ln_f.weight",
    ):
        assert expected in names


def test_residual_projections_use_scaled_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=8, n_head=4, n_embd=256))
    std = model.h[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / (2 * 8) ** 0.5) < 0.001
    assert abs(model.h[0].attn.c_attn.weight.std().item() - 0.02) < 0.001


def test_classifier_reads_the_last_real_token():
    model = tiny(n_classes=3)
    idx = torch.randint(0, 97, (2, 16))
    lengths = torch.tensor([5, 16])
    logits = model.classify(idx, lengths)
    assert logits.shape == (2, 3)
    padded = idx.clone()
    padded[0, 5:] = 0  # changing padding after the last real token changes nothing
    torch.testing.assert_close(model.classify(padded, lengths)[0], logits[0])


def test_sequence_longer_than_context_is_refused():
    with pytest.raises(ValueError, match="block_size"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


def test_loss_falls_when_overfitting_one_batch():
    model = tiny().train()
    idx = torch.randint(0, 97, (4, 16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first * 0.3


def test_model_module_imports_no_project_module_and_does_no_io():
    """The decoder and its fused loss: pure PyTorch, no file, network or config reading."""
    for path in (Path(model_module.__file__), Path(fused_loss.__file__)):
        tree = ast.parse(path.read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                imported.add(module if module.startswith("gptpipe") else module.split(".")[0])
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"open", "print", "input"}
        allowed = {
            "__future__",
            "collections",  # collections.abc's Callable, for a type
            "math",
            "dataclasses",
            "torch",
            "typing",
            "gptpipe.model.fused_loss",
        }
        assert imported <= allowed, (path.name, imported - allowed)
