"""The C++ decode kernels: built where a compiler is, one-query attention equal to torch's
attention and the few-rows Linear to `F.linear`, and a build that cannot happen says why
instead of failing decoding."""

import shutil
import time

import pytest
import torch
import torch.nn.functional as F

from gptpipe.generate import kernels
from gptpipe.generate.kernels import build, few_rows_linear, one_query_attention
from gptpipe.model.gpt import GPT, GPTConfig, KVCache

needs_kernel = pytest.mark.skipif(
    kernels.library() is None, reason=f"no kernels here: {kernels.loaded()[1]}"
)


def test_the_kernel_is_built_wherever_a_compiler_is():
    """torch.compile needs the same compiler, so a machine that trains compiled builds this."""
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler here")
    library, why = kernels.loaded()
    assert library is not None, why


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "B, H, L, D",
    [
        (1, 12, 1000, 64),
        (3, 2, 7, 8),
        (2, 3, 33, 80),
        (1, 1, 1, 16),
        (4, 4, 17, 40),
        (2, 2, 37, 32),
        (1, 2, 19, 96),
        (1, 2, 21, 128),
        (1, 1, 9, 256),
    ],
)
def test_the_kernel_is_softmax_attention_over_cache_slices(dtype, B, H, L, D):
    """Over slices of a longer cache (strided as the model's are), head widths that are and
    are not a multiple of the vector width (each width the kernel has a path for), one key
    or a thousand: what float64 attention of the same stored values gives, to float32
    accuracy, in float32. A bf16 cache is read with the query in bf16, as the model casts
    it to the cache's dtype."""
    torch.manual_seed(L)
    k = torch.randn(B, H, L + 9, D).to(dtype)[:, :, :L]
    v = torch.randn(B, H, L + 9, D).to(dtype)[:, :, :L]
    q = torch.randn(B, H, 1, D) * 3  # sharper than unit scores: softmax's max matters
    stored_q = q.to(dtype).double()
    expected = F.scaled_dot_product_attention(stored_q, k.double(), v.double())
    got = one_query_attention(q, k, v)
    assert got.dtype == torch.float32 and got.shape == (B, H, 1, D)
    torch.testing.assert_close(got.double(), expected, atol=2e-6, rtol=1e-5)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_row_reads_its_own_length(dtype):
    """With lengths, row b attends to its first lengths[b] keys only, whatever lies beyond
    (here huge values, which would dominate any softmax that read them)."""
    torch.manual_seed(0)
    B, H, L, D = 3, 2, 20, 32
    k = torch.randn(B, H, L, D).to(dtype)
    v = torch.randn(B, H, L, D).to(dtype)
    lengths = torch.tensor([20, 1, 7])
    for b, n in enumerate(lengths.tolist()):
        k[b, :, n:], v[b, :, n:] = 1e4, 1e4
    q = torch.randn(B, H, 1, D)
    got = one_query_attention(q, k, v, lengths)
    for b, n in enumerate(lengths.tolist()):
        expected = F.scaled_dot_product_attention(
            q[b : b + 1].to(dtype).double(),
            k[b : b + 1, :, :n].double(),
            v[b : b + 1, :, :n].double(),
        )
        torch.testing.assert_close(got[b : b + 1].double(), expected, atol=2e-6, rtol=1e-5)
    with pytest.raises(RuntimeError, match="cache kernel failed"):
        one_query_attention(q, k, v, torch.tensor([20, 0, 7]))  # a row with no key
    with pytest.raises(RuntimeError, match="cache kernel failed"):
        one_query_attention(q, k, v, torch.tensor([21, 1, 7]))  # past the keys
    with pytest.raises(ValueError, match="lengths"):
        one_query_attention(q, k, v, torch.tensor([20, 1]))


@needs_kernel
def test_the_kernel_refuses_what_it_cannot_read():
    k = torch.randn(1, 2, 5, 8)
    with pytest.raises(ValueError, match="float16"):
        one_query_attention(torch.randn(1, 2, 1, 8), k.half(), k.half())
    with pytest.raises(ValueError, match="one_query_attention"):
        one_query_attention(torch.randn(1, 2, 2, 8), k, k)  # two queries
    with pytest.raises(ValueError, match="one_query_attention"):
        one_query_attention(torch.randn(1, 2, 1, 5), k[..., :5].transpose(2, 3), k[..., :5])


@needs_kernel
def test_a_model_decodes_through_the_kernel_as_through_torch():
    """One token at a time on a cache read by the kernel: the same hidden states as the
    uncached forward pass, and the kernel is what read it (once per layer and step)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, block_size=24, n_layer=2, n_head=2, n_embd=32)).eval()
    calls = []

    def counted(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        calls.append(k.size(2))
        return one_query_attention(q, k, v)

    ids = torch.randint(0, 40, (1, 12))
    cache = KVCache(model.config, 1, 12, attend=counted)
    with torch.inference_mode():
        full = model.hidden_states(ids)
        model.hidden_states(ids[:, :4], cache)  # a prefill: T > 1, torch's attention
        steps = [model.hidden_states(ids[:, t : t + 1], cache) for t in range(4, 12)]
    torch.testing.assert_close(torch.cat(steps, 1), full[:, 4:], atol=1e-5, rtol=1e-5)
    assert calls == [n for n in range(5, 13) for _ in range(2)]


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 2, 3, 4])
@pytest.mark.parametrize(
    "in_features, out_features", [(768, 2304), (64, 7), (33, 130), (3072, 5), (16, 1)]
)
def test_the_linear_kernel_is_f_linear(dtype, rows, in_features, out_features):
    """Every row count it takes, widths that are and are not a multiple of the vector width,
    output counts that are and are not a multiple of the rows computed together, with and
    without a bias: float64's product of the same stored values, to the output dtype's
    rounding (the sums are float32)."""
    torch.manual_seed(rows * in_features + out_features)
    weight = torch.randn(out_features, in_features).to(dtype)
    x = torch.randn(rows, in_features).to(dtype)
    for bias in (torch.randn(out_features).to(dtype), None):
        expected = F.linear(x.double(), weight.double(), None if bias is None else bias.double())
        got = few_rows_linear(x, weight, bias)
        assert got.dtype == dtype and got.shape == (rows, out_features)
        tol = 2e-5 if dtype == torch.float32 else 8e-3  # bf16 keeps 8 bits of mantissa
        scale = expected.abs().max()
        torch.testing.assert_close(got.double() / scale, expected / scale, atol=tol, rtol=0)


@needs_kernel
def test_the_linear_kernel_keeps_leading_dimensions_and_reads_row_strides():
    """(B, T, in) with B * T <= 4 rows, and a weight that is a slice of a wider matrix."""
    torch.manual_seed(3)
    wide = torch.randn(40, 100)
    weight = wide[:, :64]  # rows 100 apart
    x = torch.randn(2, 2, 64)
    got = few_rows_linear(x, weight)
    assert got.shape == (2, 2, 40)
    torch.testing.assert_close(got, F.linear(x, weight), atol=1e-5, rtol=1e-5)


@needs_kernel
def test_the_linear_kernel_refuses_what_it_cannot_compute():
    weight = torch.randn(8, 16)
    with pytest.raises(ValueError, match="float16"):
        few_rows_linear(torch.randn(1, 16).half(), weight.half())
    with pytest.raises(ValueError, match="few_rows_linear"):
        few_rows_linear(torch.randn(5, 16), weight)  # more rows than it takes
    with pytest.raises(ValueError, match="few_rows_linear"):
        few_rows_linear(torch.randn(1, 16), weight.t().contiguous().t())  # columns contiguous
    with pytest.raises(ValueError, match="bias"):
        few_rows_linear(torch.randn(1, 16), weight, torch.randn(7))


def test_a_build_that_cannot_happen_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTPIPE_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-anywhere")
    assert build() == (None, "no C++ compiler (no-such-compiler-anywhere not found)")
    monkeypatch.setenv("CXX", shutil.which("false") or "/bin/false")
    path, why = build()
    assert path is None and why.startswith("the build failed")
    assert list(tmp_path.rglob("*.so")) == [] and list(tmp_path.rglob("*.tmp")) == []


@needs_kernel
def test_a_build_is_kept_and_reused(tmp_path, monkeypatch):
    """Built once into the per-user cache; the next build() finds it and compiles nothing."""
    monkeypatch.setenv("GPTPIPE_CACHE", str(tmp_path))
    path, why = build()
    assert path is not None, why
    assert path.parent == tmp_path / "kernels"
    stamp = path.stat().st_mtime_ns
    started = time.perf_counter()
    assert build() == (path, "")
    assert time.perf_counter() - started < 0.5 and path.stat().st_mtime_ns == stamp
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # nothing left aside
