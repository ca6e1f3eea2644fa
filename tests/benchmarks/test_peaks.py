"""The peak MFU divides by: theoretical only where the CPU and its clock can be read, else the
best measured product; an MFU above 1 is reported as such, never clamped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks import peaks
from benchmarks.bench_train import CONFIGS

ZEN5 = {"vendor_id": "AuthenticAMD", "cpu family": "26", "model": "2"}
BF16_FLAGS = "avx2 fma avx512f avx512_bf16"


def sysfs(root: Path, max_khz: int | None, core_of: dict[int, int]) -> Path:
    """A /sys tree: cpu0's cpufreq (if any) and each CPU's package and core."""
    cpu = root / "devices/system/cpu"
    if max_khz is not None:
        (cpu / "cpu0/cpufreq").mkdir(parents=True)
        (cpu / "cpu0/cpufreq/cpuinfo_max_freq").write_text(f"{max_khz}\n")
    for index, core in core_of.items():
        topology = cpu / f"cpu{index}/topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text("0\n")
        (topology / "core_id").write_text(f"{core}\n")
    return root


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def test_theoretical_peak_is_flops_per_cycle_times_cores_times_max_clock(tmp_path: Path) -> None:
    root = sysfs(tmp_path, 3_700_000, {cpu: cpu for cpu in cpus()})
    info = ZEN5 | {"flags": BF16_FLAGS}
    cores = min(2, len(cpus()))
    fp32 = peaks.theoretical("float32", 2, info, root)
    bf16 = peaks.theoretical("bfloat16", 2, info, root)
    assert fp32 is not None and bf16 is not None
    assert fp32["gflops"] == pytest.approx(64 * cores * 3.7)
    assert bf16["gflops"] == pytest.approx(128 * cores * 3.7)
    assert fp32["how"].startswith("theoretical: Zen 5") and "3.70 GHz" in fp32["how"]


def test_smt_siblings_share_one_core(tmp_path: Path) -> None:
    root = sysfs(tmp_path, 3_000_000, dict.fromkeys(cpus(), 0))
    found = peaks.theoretical("float32", 8, ZEN5 | {"flags": ""}, root)
    assert found is not None and found["gflops"] == pytest.approx(64 * 1 * 3.0)


def test_no_theoretical_peak_where_it_cannot_be_read(tmp_path: Path) -> None:
    guest = sysfs(tmp_path / "guest", None, {cpu: cpu for cpu in cpus()})  # KVM: no cpufreq
    host = sysfs(tmp_path / "host", 3_000_000, {cpu: cpu for cpu in cpus()})
    assert peaks.theoretical("float32", 2, ZEN5 | {"flags": BF16_FLAGS}, guest) is None
    hybrid = {"vendor_id": "GenuineIntel", "cpu family": "6", "model": "151", "flags": ""}
    assert peaks.theoretical("float32", 2, hybrid, host) is None  # P/E cores: unknown mix
    assert peaks.theoretical("bfloat16", 2, ZEN5 | {"flags": "avx2"}, host) is None  # emulated
    zen3 = {"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "1", "flags": ""}
    assert peaks.theoretical("bfloat16", 2, zen3, host) is None  # no native bf16 in the table
    assert peaks.theoretical("float32", 2, zen3, host) is not None


def test_the_peak_used_is_theoretical_where_known_and_a_bound() -> None:
    measured = peaks.measured({"(8x8)x(8x8)": 50.0, "(16x16)x(16x16)": 200.0}, reps=3)
    assert measured["gflops"] == 200.0 and measured["shape"] == "(16x16)x(16x16)"
    assert "best of 2 products" in measured["how"]
    alone = peaks.choose(None, measured)
    assert alone["source"] == "measured" and alone["gflops"] == 200.0
    theory = {"gflops": 400.0, "how": "theoretical: x"}
    assert peaks.choose(theory, measured)["source"] == "theoretical"
    wrong = peaks.choose({"gflops": 100.0, "how": "theoretical: x"}, measured)
    assert wrong["source"] == "measured" and wrong["theoretical_below_measured"] is True


def test_mfu_above_one_is_reported_not_clamped() -> None:
    assert peaks.mfu(50.0, 100.0) == (0.5, False)
    assert peaks.mfu(150.0, 100.0) == (1.5, True)


def test_the_products_include_the_models_own_gemms() -> None:
    shapes = peaks.product_shapes([CONFIGS["b"]], batch=8, squares=(1024,))
    m, d, v = 8 * 256, 384, 50257
    assert shapes[0] == (1024, 1024, 1024)
    assert {(m, d, 4 * d), (d, m, 4 * d), (m, d, v), (m, v, d), (d, m, v)} <= set(shapes)
    assert len(shapes) == len(set(shapes))


def test_measured_products_are_positive_rates() -> None:
    found = peaks.measure_products([(32, 64, 48), (64, 64, 64)], "float32", threads=1, reps=2)
    assert set(found) == {"(32x64)x(64x48)", "(64x64)x(64x64)"}
    assert all(rate > 0 for rate in found.values())


def test_flops_per_token_of_config_b_is_the_stored_records() -> None:
    """6N + 12·L·d·T of config b (N = 29,946,240 without the position embeddings): the
    figure benchmarks/results/train.json holds for it."""
    assert peaks.flops_per_token(29_946_240, 6, 384, 256) == 186_755_328
