"""One new query attending over a key/value cache, in a small C++ kernel built on first use.

Far into a long continuation, a decoding step's attention reads the whole cache: at GPT-2
124M's shape and 1,000 cached positions, 74 MB in float32 or 37 MB in bf16 per token, as
much again as a third of the weights. torch's CPU attention reads it well below the memory's
speed. Measured on a 2-core AMD EPYC (AVX-512 BF16, no AMX), one query per layer over 1,000
keys, 12 layers in turn: `scaled_dot_product_attention` takes 5.5 ms on a float32 cache and
~6x longer on a bf16 one, where this kernel takes 1.9 ms on the bf16 cache (19 GB/s of the
machine's ~25). Its work is what the attention of one query is: a dot product per cached
key, a softmax, a weighted sum of the values, every key and value read once as it is
stored (bf16 or float32), accumulated in float32.

It is C++ on ATen's vector types and thread pool, compiled for the machine it runs on with
the C++ compiler torch.compile uses too (`$CXX`, else `c++`), into the per-user cache
(`$GPTPIPE_CACHE/kernels`, default ~/.cache/gptpipe; a few seconds, once per machine and
torch version), and
called through ctypes. Where it cannot be built (no compiler, not a CPU build), `kernel()`
is None and decoding keeps torch's attention; where it is built, `decode.cache_plan` still
times it against torch's and uses it only where it is faster.
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

SOURCE = Path(__file__).with_name("one_query_attention.cpp")
ENTRY = "gptpipe_one_query_attention"

# the dtypes a cache may have for the kernel; the value is the entry point's `bf16` flag
CACHE_DTYPES = {torch.float32: 0, torch.bfloat16: 1}

Kernel = Callable[..., int]


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
    instruction set torch itself dispatches to here (`get_cpu_capability`)."""
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
    """Build the kernel unless this machine has it built: (path to the shared library, '')
    or (None, why not). The file's name hashes everything the build depends on, so a new
    source, torch or CPU builds anew; it appears whole (written aside, then renamed)."""
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        return None, f"no C++ compiler ({os.environ.get('CXX', 'c++')} not found)"
    probe = compile_command(compiler, Path("out.so"))
    key = "\n".join([SOURCE.read_text(), *probe, torch.__version__, _cpu_flags()])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    target = kernel_dir() / f"one_query_attention-{digest}.so"
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
def loaded() -> tuple[Kernel | None, str]:
    """The kernel's entry point, built and loaded once per process: (function, '') or
    (None, why not)."""
    path, why = build()
    if path is None:
        return None, why
    try:
        function = getattr(ctypes.CDLL(str(path)), ENTRY)
    except (OSError, AttributeError) as error:
        return None, f"{path} does not load: {error}"
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] + [ctypes.c_int64] * 10
    function.argtypes += [ctypes.c_float, ctypes.c_void_p]
    return function, ""


def kernel() -> Kernel | None:
    """The kernel's entry point, or None where it cannot be built here."""
    return loaded()[0]


def usable(k: torch.Tensor) -> bool:
    """Whether the kernel can read a cache like `k`: a CPU tensor of a dtype it knows, its
    rows contiguous, on a machine where it is built."""
    return k.device.type == "cpu" and k.dtype in CACHE_DTYPES and kernel() is not None


def one_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v for one query per row and head: q (B, H, 1, D) in any float
    dtype; k, v (B, H, L, D) float32 or bfloat16, each row of D contiguous (the cache's own
    slices are) -> (B, H, 1, D) float32. As `scaled_dot_product_attention` with no mask."""
    function = kernel()
    B, H, L, D = k.shape
    if function is None or not usable(k) or v.dtype != k.dtype:
        raise ValueError(f"the cache kernel cannot read a {k.dtype} cache on {k.device}")
    if q.shape != (B, H, 1, D) or v.shape != k.shape or k.stride(3) != 1 or v.stride(3) != 1:
        raise ValueError(f"one_query_attention: q {tuple(q.shape)}, k {tuple(k.shape)}")
    query = q.to(torch.float32).contiguous()
    out = torch.empty(B, H, 1, D, dtype=torch.float32)
    status = function(
        query.data_ptr(),
        k.data_ptr(),
        v.data_ptr(),
        CACHE_DTYPES[k.dtype],
        B,
        H,
        L,
        D,
        *k.stride()[:3],
        *v.stride()[:3],
        D**-0.5,
        out.data_ptr(),
    )
    if status != 0:
        raise RuntimeError("the cache kernel failed")
    return out
