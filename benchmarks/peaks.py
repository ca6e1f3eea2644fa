"""The peak a model-FLOPs-utilisation (MFU) figure divides by, and how it was found.

MFU = achieved model FLOP/s / peak FLOP/s of the same dtype on the same threads. It only
means something when the peak bounds what the step can reach, so the peak is either

- **theoretical**: FLOPs per cycle per core of the CPU's microarchitecture (`MICROARCHS`, a
  small table from the vendors' documents: the widest FMA units a part of that family and
  model has, an FMA counted as 2 FLOPs) x the physical cores the threads can use x the
  maximum clock from `/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq` (the highest
  boost; vector code runs at or below it, so this bounds from above). It is None where any
  of these cannot be read truthfully: an unknown family/model, no cpufreq (a KVM guest: its
  /proc/cpuinfo "cpu MHz" is the TSC rate, its boost unknown, its vCPUs possibly SMT siblings
  of one core), or bf16 on a CPU without native bf16 (AVX-512 BF16 or AMX); or
- **measured**: the best rate of several well-shaped matrix products measured in the same
  run (`product_shapes`: squares of 1024/2048/4096 and the benchmarked model's own GEMMs,
  forward and backward), each the best of a few repetitions. The model's step runs the same
  products, so it rarely beats this; where it does, the record says the peak is not a bound.

The theoretical peak is used where known, else the measured one (`choose`); the record keeps
both and says which (`how`). `mfu` never clamps: a value above 1 comes back with
`exceeds=True`, and the table says that the peak is not a bound.

The FLOPs per token of a GPT training step are 6N + 12·L·d·T (PaLM, appendix B): 6 per
weight (2 forward, 4 backward) with N the parameters without the position embeddings and the
tied head counted once, plus the attention's QKᵀ and AV products, 2·2·T·d per layer forward
and twice that backward, for context T.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptpipe.report.environment import cpuinfo

Shape = tuple[int, int, int]  # (m, k, n): an (m, k) x (k, n) product


@dataclass(frozen=True)
class Microarch:
    """FLOPs per cycle per core of one family of CPUs (an FMA = 2 FLOPs). `bf16` only where
    the part computes bf16 natively (AVX-512 BF16 dot products or AMX tiles)."""

    vendor: str
    family: int
    models: tuple[range, ...]
    name: str
    fp32: int
    bf16: int | None
    why: str


def _r(*spans: tuple[int, int]) -> tuple[range, ...]:
    return tuple(range(lo, hi + 1) for lo, hi in spans)


# Sources: Intel 64 and IA-32 Architectures Optimization Reference Manual (FMA ports, AMX:
# 1024 bf16 FLOPs/cycle/core), AMD Software Optimization Guides for families 17h/19h/1Ah (FP
# pipes and their widths). Where SKUs of one model differ (Skylake-SP with one or two AVX-512
# FMA units) the wider is listed: the peak must bound, not match. Hybrid P/E-core parts are
# left out (which cores run the threads is unknown), as is anything not listed.
MICROARCHS: tuple[Microarch, ...] = (
    Microarch(
        "GenuineIntel",
        6,
        _r((60, 60), (63, 63), (69, 71), (61, 61), (79, 79), (86, 86)),
        "Haswell/Broadwell",
        32,
        None,
        "2 x 256-bit FMA",
    ),
    Microarch(
        "GenuineIntel",
        6,
        _r((78, 78), (94, 94), (142, 142), (158, 158), (165, 166)),
        "Skylake client",
        32,
        None,
        "2 x 256-bit FMA",
    ),
    Microarch(
        "GenuineIntel",
        6,
        _r((85, 85)),
        "Skylake-SP/Cascade Lake/Cooper Lake",
        64,
        128,
        "up to 2 x 512-bit FMA; bf16 (Cooper Lake): 2 x 32-pair VDPBF16PS",
    ),
    Microarch(
        "GenuineIntel", 6, _r((106, 106), (108, 108)), "Ice Lake-SP", 64, None, "2 x 512-bit FMA"
    ),
    Microarch(
        "GenuineIntel",
        6,
        _r((143, 143), (207, 207), (173, 174)),
        "Sapphire/Emerald/Granite Rapids",
        64,
        1024,
        "2 x 512-bit FMA; bf16: AMX TMUL, 1024 FLOPs/cycle",
    ),
    Microarch("AuthenticAMD", 23, _r((0, 47)), "Zen/Zen+", 16, None, "2 x 128-bit FMA"),
    Microarch("AuthenticAMD", 23, _r((48, 175)), "Zen 2", 32, None, "2 x 256-bit FMA"),
    Microarch("AuthenticAMD", 25, _r((0, 15), (32, 95)), "Zen 3", 32, None, "2 x 256-bit FMA"),
    Microarch(
        "AuthenticAMD",
        25,
        _r((16, 31), (96, 127), (160, 175)),
        "Zen 4",
        32,
        64,
        "2 x 256-bit FMA (AVX-512 in two halves); bf16: 2 x 16-pair VDPBF16PS",
    ),
    Microarch(
        "AuthenticAMD",
        26,
        _r((0, 31), (64, 79)),
        "Zen 5 (server/desktop)",
        64,
        128,
        "2 x 512-bit FMA; bf16: 2 x 32-pair VDPBF16PS",
    ),
    Microarch(
        "AuthenticAMD",
        26,
        _r((32, 47), (96, 127)),
        "Zen 5 (mobile)",
        32,
        64,
        "2 x 256-bit FMA; bf16: 2 x 16-pair VDPBF16PS",
    ),
)

DTYPES = ("float32", "bfloat16")


def native_bf16_flags(info: dict[str, str]) -> bool:
    flags = set(info.get("flags", "").split())
    return "avx512_bf16" in flags or "amx_bf16" in flags


def microarch(info: dict[str, str]) -> Microarch | None:
    """The table's entry for this CPU's vendor, family and model, or None."""
    family, model = info.get("cpu family", ""), info.get("model", "")
    if not (family.isdigit() and model.isdigit()):
        return None
    return next(
        (
            entry
            for entry in MICROARCHS
            if entry.vendor == info.get("vendor_id")
            and entry.family == int(family)
            and any(int(model) in span for span in entry.models)
        ),
        None,
    )


def max_clock_hz(sys_root: Path = Path("/sys")) -> float | None:
    """cpu0's highest clock (cpufreq's cpuinfo_max_freq, kHz); None where there is no cpufreq
    (a hypervisor's guest, or a kernel without the driver)."""
    path = sys_root / "devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) * 1e3 if text.isdigit() and int(text) > 0 else None


def physical_cores(sys_root: Path = Path("/sys"), cpus: Iterable[int] | None = None) -> int | None:
    """Distinct (package, core) pairs among the CPUs this process may run on (sysfs
    topology): SMT siblings share one core's FMA units."""
    cpus = sorted(os.sched_getaffinity(0)) if cpus is None else cpus
    cores = set()
    for cpu in cpus:
        topology = sys_root / f"devices/system/cpu/cpu{cpu}/topology"
        try:
            package = (topology / "physical_package_id").read_text(encoding="utf-8").strip()
            core = (topology / "core_id").read_text(encoding="utf-8").strip()
        except OSError:
            return None
        cores.add((package, core))
    return len(cores) or None


def theoretical(
    dtype: str, threads: int, info: dict[str, str] | None = None, sys_root: Path = Path("/sys")
) -> dict[str, Any] | None:
    """{gflops, how} of the theoretical peak of `threads` threads in `dtype`, or None where it
    cannot be read truthfully (see the module docstring)."""
    info = cpuinfo() if info is None else info
    arch, clock = microarch(info), max_clock_hz(sys_root)
    if arch is None or clock is None:
        return None
    per_cycle = arch.fp32 if dtype == "float32" else arch.bf16
    if per_cycle is None or (dtype == "bfloat16" and not native_bf16_flags(info)):
        return None
    cores = physical_cores(sys_root)
    if cores is None:
        return None
    used = min(threads, cores)
    gflops = per_cycle * used * clock / 1e9
    return {
        "gflops": gflops,
        "how": f"theoretical: {arch.name} (family {info['cpu family']}, model {info['model']}; "
        f"{arch.why}), {per_cycle} {dtype} FLOPs/cycle/core x {used} cores x "
        f"{clock / 1e9:.2f} GHz max clock",
    }


def product_shapes(
    archs: Iterable[dict[str, int]], batch: int, squares: Iterable[int]
) -> list[Shape]:
    """Squares, and each model's own large GEMMs (M = batch x context tokens): the MLP's
    (M, d) x (d, 4d) and its weight gradient (d, M) x (M, 4d), the head's (M, d) x (d, vocab),
    its input gradient (M, vocab) x (vocab, d) and weight gradient (d, M) x (M, vocab)."""
    shapes: list[Shape] = [(n, n, n) for n in squares]
    for arch in archs:
        m, d, v = batch * arch["block_size"], arch["n_embd"], arch["vocab_size"]
        for shape in ((m, d, 4 * d), (d, m, 4 * d), (m, d, v), (m, v, d), (d, m, v)):
            if shape not in shapes:
                shapes.append(shape)
    return shapes


def shape_text(shape: Shape) -> str:
    m, k, n = shape
    return f"({m}x{k})x({k}x{n})"


def measure_products(
    shapes: Iterable[Shape], dtype: str, threads: int, reps: int = 3, budget_s: float = 4.0
) -> dict[str, float]:
    """GFLOP/s of each product in `dtype` on `threads` threads: the best of `reps` timed runs
    after one untimed, fewer where one product's runs pass `budget_s` (a slow dtype)."""
    import torch

    torch.set_num_threads(threads)
    out = {}
    for shape in shapes:
        m, k, n = shape
        a = torch.randn(m, k).to(getattr(torch, dtype))
        b = torch.randn(k, n).to(getattr(torch, dtype))
        deadline = time.perf_counter() + budget_s
        a @ b
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
            if time.perf_counter() > deadline:
                break
        out[shape_text(shape)] = 2 * m * k * n / best / 1e9
        del a, b
    return out


def measured(products: dict[str, float], reps: int) -> dict[str, Any]:
    """{gflops, shape, how} of the best of `products` (shape text -> GFLOP/s)."""
    shape = max(products, key=lambda s: products[s])
    return {
        "gflops": products[shape],
        "shape": shape,
        "how": f"measured: best of {len(products)} products (each the best of {reps} runs), "
        f"shape {shape}",
    }


def choose(theory: dict[str, Any] | None, measure: dict[str, Any]) -> dict[str, Any]:
    """The peak an MFU divides by: the theoretical where known, else the measured best.
    A measured rate above the theoretical says the table's entry is wrong for this CPU:
    recorded as `theoretical_below_measured`, and the measured one is used."""
    chosen = theory if theory is not None and theory["gflops"] >= measure["gflops"] else measure
    return {
        "gflops": chosen["gflops"],
        "source": "theoretical" if chosen is theory else "measured",
        "how": chosen["how"],
        "theoretical": theory,
        "measured": measure,
        "theoretical_below_measured": theory is not None and chosen is not theory,
    }


def mfu(gflops: float, peak_gflops: float) -> tuple[float, bool]:
    """(achieved / peak, whether that exceeds 1: then the peak does not bound the step).
    Never clamped."""
    value = gflops / peak_gflops
    return value, value > 1.0


def flops_per_token(n_params: int, n_layer: int, n_embd: int, context: int) -> int:
    """6N + 12·L·d·T (see the module docstring)."""
    return 6 * n_params + 12 * n_layer * n_embd * context
