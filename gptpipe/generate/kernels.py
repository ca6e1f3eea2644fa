"""Two products of a decoding step in a small C++ library built on first use: one new query
attending over a key/value cache, and a Linear applied to a few rows; and a whole one-token
step made of them (`gptpipe.generate.fused_step`).

Batch-1 decoding is bound by memory traffic: each token reads every weight once, and far
into a long continuation the whole cache too. torch's CPU kernels read both well below the
memory's speed at these shapes:

- The cache. At GPT-2 124M's shape and 1,000 cached positions a step reads 74 MB of it in
  float32 or 37 MB in bf16, as much again as a third of the weights. Measured on a 2-core
  AMD EPYC (AVX-512 BF16, no AMX), one query per layer over 1,000 keys, 12 layers in turn:
  `scaled_dot_product_attention` takes 5.5 ms on a float32 cache and ~6x longer on a bf16
  one, where `one_query_attention` (then single-threaded) took 1.9 ms on the bf16 cache.
- The weights. On a 2-core AMX Xeon (family 6 model 207), one row through GPT-2 124M's 48
  block Linears in bf16 takes 20 ms with torch's kernels, oneDNN's packed layout included
  (8.5 GB/s: its bf16 matrix-vector product is bound by its own compute there), and 14 ms
  through `few_rows_linear` (12 GB/s); the 50,257-row head 4.8 against 3.2 ms. What is
  fastest differs between CPUs, so `gptpipe.generate.layouts` times every layout per shape.

Their work is what the products are: for attention, a dot product per cached key, a
softmax, a weighted sum of the values; for a Linear, a dot product per weight row (with the
CPU's bf16 dot-product instruction where it has one), every key, value and weight read
once as it is stored (bf16 or float32), accumulated in float32.

It is C++ on ATen's vector types and OpenMP thread pool, compiled for the machine it runs
on with the C++ compiler torch.compile uses too (`$CXX`, else `c++`), into the per-user
cache (`$GPTPIPE_CACHE/kernels`, default ~/.cache/gptpipe; seconds, once per machine and
torch version), and called through ctypes. Where it cannot be built (no compiler, not a CPU
build), `library()` is None and decoding keeps torch's kernels; where it is built, its
callers still time it against torch's and use it only where it is faster.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import torch

from gptpipe.runtime import user_cache_dir

SOURCE = Path(__file__).with_name("decode_kernels.cpp")

# the dtypes a cache or a Linear may have for the kernels; the value is the entry points'
# `bf16` flag
KERNEL_DTYPES = {torch.float32: 0, torch.bfloat16: 1}
# `few_rows_linear` takes at most this many rows at once
MAX_ROWS = 4

_POINTER, _INT, _INT64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
ENTRIES = {
    "gptpipe_one_query_attention": [_POINTER] * 3
    + [_INT, _INT64, _INT64, _INT64, _POINTER]
    + [_INT64] * 7
    + [ctypes.c_float, _POINTER],
    "gptpipe_few_rows_linear": [_POINTER] * 4 + [_INT] + [_INT64] * 4,
    "gptpipe_decode_step": [_POINTER, _INT, _POINTER, _POINTER, _INT, _INT64, _INT64, _POINTER]
    + [_INT64] * 4
    + [ctypes.c_float, _INT, _POINTER],
}


class Library:
    """The built library's entry points, typed for ctypes."""

    def __init__(self, dll: ctypes.CDLL) -> None:
        self.one_query_attention = self._entry(dll, "gptpipe_one_query_attention")
        self.few_rows_linear = self._entry(dll, "gptpipe_few_rows_linear")
        self.decode_step = self._entry(dll, "gptpipe_decode_step")

    @staticmethod
    def _entry(dll: ctypes.CDLL, name: str) -> Callable[..., int]:
        function = getattr(dll, name)
        function.restype = ctypes.c_int
        function.argtypes = ENTRIES[name]
        return function


def kernel_dir() -> Path:
    """Where built kernels are kept: the `kernels` folder of the per-user cache."""
    return user_cache_dir() / "kernels"


def _cpu_flags() -> str:
    """The CPU's feature flags (a build uses -march=native, so it belongs to this CPU)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return ""


def compile_command(compiler: str, output: Path) -> list[str]:
    """The compiler's command line: optimised for this CPU, with ATen's vector code for the
    instruction set torch itself dispatches to here (`get_cpu_capability`), and OpenMP, so
    that `at::parallel_for` runs on torch's own thread pool (torch's libgomp, by rpath)."""
    torch_dir = Path(torch.__file__).parent
    capability = torch.backends.cpu.get_cpu_capability()
    defines = [f"-DCPU_CAPABILITY={capability}", f"-DCPU_CAPABILITY_{capability}"]
    if capability not in ("AVX2", "AVX512"):  # ATen's portable vector code
        defines = ["-DCPU_CAPABILITY=DEFAULT"]
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [
        compiler,
        "-O3",
        "-march=native",
        "-std=c++17",
        "-fopenmp",
        "-shared",
        "-fPIC",
        "-fvisibility=hidden",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        *defines,
        f"-I{torch_dir / 'include'}",
        str(SOURCE),
        "-o",
        str(output),
        f"-L{torch_dir / 'lib'}",
        "-lc10",
        "-ltorch_cpu",
        f"-Wl,-rpath,{torch_dir / 'lib'}",
    ]


def build() -> tuple[Path | None, str]:
    """Build the library unless this machine has it built: (path to the shared library, '')
    or (None, why not). The file's name hashes everything the build depends on, so a new
    source, torch or CPU builds anew; it appears whole (written aside, then renamed)."""
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        return None, f"no C++ compiler ({os.environ.get('CXX', 'c++')} not found)"
    probe = compile_command(compiler, Path("out.so"))
    key = "\n".join([SOURCE.read_text(), *probe, torch.__version__, _cpu_flags()])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    target = kernel_dir() / f"decode_kernels-{digest}.so"
    if target.exists():
        return target, ""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        done = subprocess.run(
            compile_command(compiler, scratch), capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            scratch.unlink(missing_ok=True)
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            return None, f"the build failed: {last}"
        os.replace(scratch, target)
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"the build failed: {error}"
    return target, ""


@functools.lru_cache(maxsize=1)
def loaded() -> tuple[Library | None, str]:
    """The library, built and loaded once per process: (library, '') or (None, why not)."""
    path, why = build()
    if path is None:
        return None, why
    try:
        return Library(ctypes.CDLL(str(path))), ""
    except (OSError, AttributeError) as error:
        return None, f"{path} does not load: {error}"


def library() -> Library | None:
    """The library, or None where it cannot be built here."""
    return loaded()[0]


def usable(t: torch.Tensor) -> bool:
    """Whether the kernels can read a cache or weight like `t`: a CPU tensor of a dtype they
    know, on a machine where they are built."""
    return t.device.type == "cpu" and t.dtype in KERNEL_DTYPES and library() is not None


def one_query_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v for one query per row and head: q (B, H, 1, D) in any float
    dtype; k, v (B, H, L, D) float32 or bfloat16, each row of D contiguous (the cache's own
    slices are) -> (B, H, 1, D) float32. As `scaled_dot_product_attention` with no mask, or
    with `lengths` (B,) int64: row b reads its first lengths[b] keys only (1..L each)."""
    lib = library()
    B, H, L, D = k.shape
    if lib is None or not usable(k) or v.dtype != k.dtype:
        raise ValueError(f"the cache kernel cannot read a {k.dtype} cache on {k.device}")
    if q.shape != (B, H, 1, D) or v.shape != k.shape or k.stride(3) != 1 or v.stride(3) != 1:
        raise ValueError(f"one_query_attention: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if lengths is not None:
        if lengths.shape != (B,):
            raise ValueError(f"one_query_attention: lengths {tuple(lengths.shape)} for {B} rows")
        lengths = lengths.to(torch.int64).contiguous()
    query = q.to(torch.float32).contiguous()
    out = torch.empty(B, H, 1, D, dtype=torch.float32)
    status = lib.one_query_attention(
        query.data_ptr(),
        k.data_ptr(),
        v.data_ptr(),
        KERNEL_DTYPES[k.dtype],
        B,
        H,
        L,
        None if lengths is None else lengths.data_ptr(),
        D,
        *k.stride()[:3],
        *v.stride()[:3],
        D**-0.5,
        out.data_ptr(),
    )
    if status != 0:
        raise RuntimeError("the cache kernel failed")
    return out


def few_rows_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """`F.linear(x, weight, bias)` for at most `MAX_ROWS` rows of x (..., in): weight
    (out, in) with contiguous rows, all of one dtype, float32 or bfloat16 -> (..., out)."""
    lib = library()
    out_features, in_features = weight.shape
    rows = x.numel() // max(in_features, 1)
    if lib is None or not usable(weight) or x.dtype != weight.dtype:
        raise ValueError(f"the linear kernel cannot read a {weight.dtype} weight on {x.device}")
    if x.size(-1) != in_features or not 1 <= rows <= MAX_ROWS or weight.stride(1) != 1:
        raise ValueError(f"few_rows_linear: x {tuple(x.shape)}, weight {tuple(weight.shape)}")
    if bias is not None and (bias.dtype != weight.dtype or bias.shape != (out_features,)):
        raise ValueError(f"few_rows_linear: bias {tuple(bias.shape)} of {bias.dtype}")
    x = x.contiguous()
    bias = None if bias is None else bias.contiguous()
    y = torch.empty(*x.shape[:-1], out_features, dtype=x.dtype)
    status = lib.few_rows_linear(
        x.data_ptr(),
        weight.data_ptr(),
        None if bias is None else bias.data_ptr(),
        y.data_ptr(),
        KERNEL_DTYPES[weight.dtype],
        rows,
        in_features,
        out_features,
        weight.stride(0),
    )
    if status != 0:
        raise RuntimeError("the linear kernel failed")
    return y
