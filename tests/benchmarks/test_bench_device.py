"""The GPU check's benchmark and script, smoke-run on the CPU: `bench_device --quick --device
cpu` through its command line leaves results and a run_all-style record that `device_rows`
renders as its own section of the results table; its pieces (the published peaks, the junit
counts, a failed variant) on their own; and `benchmarks/device_check.sh` parses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import table
from benchmarks.bench_device import GPT2_124M, flops_per_token, junit_counts, published_peak
from benchmarks.device_table import device_rows

REPO = Path(__file__).resolve().parents[2]
JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.cuda.test_a" name="test_one"/>
<testcase classname="tests.cuda.test_a" name="test_two"/>
<testcase classname="tests.cuda.test_b" name="test_three"><failure message="boom"/></testcase>
<testcase classname="tests.cuda.test_b" name="test_four"><skipped message="no dvc"/></testcase>
</testsuite></testsuites>
"""


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "benchmarks.bench_device", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    pytest.importorskip("transformers")  # the reference
    out = tmp_path_factory.mktemp("device")
    (out / "tests.xml").write_text(JUNIT, encoding="utf-8")
    done = bench(
        "--quick",
        "--device",
        "cpu",
        "--budget-s",
        "2",
        "--junit",
        str(out / "tests.xml"),
        "--json",
        str(out / "results.json"),
        "--record",
        str(out / "device.json"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_the_quick_cpu_run_measures_every_side(quick):
    results = json.loads((quick / "results.json").read_text(encoding="utf-8"))
    assert results["device"] == "cpu" and results["quick"] is True
    assert results["peak_bf16_tflops"] is None  # no made-up peak: no MFU
    variants = results["train"]["variants"]
    assert set(variants) == {"ours", "hf"}  # --quick: no inductor build
    for side in variants.values():
        assert side["tokens_per_s"] > 0 and side["steps"] >= 2 and side["mfu"] is None
    batches = results["decode"]["batches"]
    assert set(batches) == {"1", "16"}
    for pair in batches.values():
        assert pair["ours"]["tokens_per_s"] > 0 and pair["hf"]["tokens_per_s"] > 0
        assert 0.0 <= pair["agreement"] <= 1.0
    assert results["cuda_tests"]["failed"] == 1


def test_the_record_renders_as_its_own_section(quick, monkeypatch):
    record = json.loads((quick / "device.json").read_text(encoding="utf-8"))
    assert record["benchmark"] == "device"
    assert record["command"].startswith("python -m benchmarks.bench_device --quick")
    assert record["environment"]["packages"]["torch"]
    rows = device_rows(record["results"])
    figures = [row.figure for row in rows]
    assert "not a GPU figure" in rows[0].ours
    assert any(f.startswith("training tokens/s") and "eager" in f for f in figures)
    assert sum(f.startswith("greedy decoding tokens/s") for f in figures) == 2
    tests = next(row for row in rows if row.figure.startswith("CUDA tests"))
    assert tests.ours == "2 / 1 / 1" and tests.met is False
    assert "test_three" in tests.reference
    monkeypatch.setitem(table.SUMMARIES, "device", device_rows)
    page = table.render({"device": record})
    assert "## device" in page and "| training tokens/s" in page


def test_a_failed_variant_shows_its_error_and_no_ratio(quick):
    results = json.loads((quick / "results.json").read_text(encoding="utf-8"))
    results["train"]["variants"]["hf"] = {"error": "OutOfMemoryError: CUDA out of memory"}
    row = next(r for r in device_rows(results) if r.figure.startswith("training tokens/s"))
    assert row.reference == "failed: OutOfMemoryError: CUDA out of memory"
    assert row.ratio is None


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA H200 NVL", 835.0),
        ("Tesla T4", None),
    ],
)
def test_the_published_peak_is_the_card_s_own_or_none(name, peak):
    assert published_peak(name)[0] == peak


def test_flops_per_token_at_gpt2_124m():
    """6N + 12 L d T with N = 124,439,808 - 786,432 position embeddings (tied head once)."""
    n = 124_439_808 - 1024 * 768
    assert flops_per_token(GPT2_124M) == 6 * n + 12 * 12 * 768 * 1024


def test_junit_counts(tmp_path):
    path = tmp_path / "j.xml"
    path.write_text(JUNIT, encoding="utf-8")
    counts = junit_counts(path)
    assert {k: counts[k] for k in ("passed", "failed", "errors", "skipped")} == {
        "passed": 2,
        "failed": 1,
        "errors": 0,
        "skipped": 1,
    }
    assert counts["not_passed"] == ["tests.cuda.test_b::test_three"]


def test_asking_for_cuda_without_one_is_bad_input():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = bench("--device", "cuda")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].count("--device") == 1


def test_the_device_check_script_parses():
    done = subprocess.run(
        ["bash", "-n", str(REPO / "benchmarks" / "device_check.sh")], capture_output=True
    )
    assert done.returncode == 0, done.stderr
