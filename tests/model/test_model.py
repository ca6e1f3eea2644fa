"""The GPT module: shapes, causality, attention paths, initialisation, purity."""

import ast
from pathlib import Path

import pytest
import torch

from gptpipe.model import fused_loss
from gptpipe.model import gpt as model_module
from gptpipe.model.gpt import GPT, GPTConfig, attention_reference

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


def test_sdpa_path_equals_reference_attention_and_returns_weights():
    model = tiny()
    idx = torch.randint(0, 97, (2, 16))
    fast, _ = model(idx)
    slow, _ = model(idx, return_weights=True)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    weights = model.h[0].attn.last_weights
    assert weights.shape == (2, 4, 16, 16)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 16))
    assert torch.all(weights.triu(1) == 0)  # no weight on the future


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
            "math",
            "dataclasses",
            "torch",
            "typing",
            "gptpipe.model.fused_loss",
        }
        assert imported <= allowed, (path.name, imported - allowed)
