"""RESULTS.md: machine lines (CPUs that share a name told apart by their numbers), training's
MFU and same-dtype pairs, decoding's pairs and bandwidth target, and stale sections."""

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks.table import (
    MEASURES,
    SUMMARIES,
    generate_rows,
    machine_line,
    render,
    staleness,
    train_rows,
)


def environment(family: int | None, model: int | None) -> dict:
    cpu = {"model": "AMD EPYC", "flags": {"avx2": True}, "cores": 2, "threads": 2}
    if family is not None:
        cpu |= {"family": family, "model_number": model}
    return {"cpu": cpu, "memory_bytes": 24 * 2**30}


def test_same_named_cpus_of_other_families_get_other_lines() -> None:
    zen1, zen5 = machine_line(environment(23, 1)), machine_line(environment(26, 2))
    assert zen1 != zen5
    assert zen5.startswith("AMD EPYC (family 26, model 2), 2 cores / 2 threads")


def test_a_record_from_before_the_numbers_says_so() -> None:
    assert "(family and model not recorded)" in machine_line(environment(None, None))


# ----------------------------------------------------------------- training MFU and pairs


def train_variant(impl: str, dtype: str, tokens_per_s: float, **settings: object) -> dict:
    return {
        "tokens_per_s": tokens_per_s,
        "flops_per_token": 1_000_000,  # 1 MFLOP: tokens/s x 1e-3 = GFLOP/s
        "settings": {"impl": impl, "dtype": dtype, **settings},
    }


def native_train_results(ours_bf16: float) -> dict:
    peak = {"gflops": 100.0, "how": "measured: best of 3 products, shape (1x1)x(1x1)"}
    return {
        "machine": "AMD EPYC, 2 CPUs, avx2 avx512_bf16",
        "native_bf16": True,
        "threads": 2,
        "peaks": {"float32": peak | {"gflops": 50.0}, "bfloat16": peak},
        "ours_variant": "ours-default",
        "configs": {
            "a": {
                "hf": train_variant("hf", "float32", 10_000),
                "hf-compiled": train_variant("hf", "float32", 12_000, compile=True),
                "ours-fp32": train_variant("ours", "float32", 20_000),
                "hf-bf16": train_variant("hf", "bfloat16", 20_000),
                "hf-bf16-compiled": train_variant("hf", "bfloat16", 30_000, compile=True),
                "ours-default": train_variant("ours", "bfloat16", ours_bf16),
            }
        },
    }


def by_figure(rows: list, start: str) -> list:
    return [r for r in rows if r.figure.startswith(start)]


def test_each_dtype_is_paired_with_transformers_fastest_setting_of_that_dtype() -> None:
    rows = train_rows(native_train_results(ours_bf16=70_000))
    fp32, bf16 = by_figure(rows, "pretraining tokens/s")
    assert (
        "float32: ours-fp32" in fp32.figure and "(hf-compiled, of hf, hf-compiled)" in fp32.figure
    )
    assert fp32.reference == "12,000" and fp32.target == "" and fp32.met is None  # not default
    assert "bf16 autocast: ours-default" in bf16.figure and "hf-bf16-compiled" in bf16.figure
    assert bf16.ratio == pytest.approx(70 / 30) and bf16.target == ">= 2x" and bf16.met is True
    mfu = by_figure(rows, "MFU of ours-default")[0]  # 70 GFLOP/s of a 100 GFLOP/s peak
    assert mfu.ours == "70.0%" and mfu.target == ">= 50%" and mfu.met is True
    assert mfu.reference == "transformers (hf-bf16-compiled): 30.0%"
    assert [r.ours for r in by_figure(rows, "bfloat16 peak")] == ["100"]


def test_a_step_faster_than_the_peak_says_the_peak_is_no_bound() -> None:
    rows = train_rows(native_train_results(ours_bf16=130_000))
    mfu = by_figure(rows, "MFU of ours-default")[0]
    assert "does not bound" in mfu.figure and mfu.met is False
    assert mfu.ours.startswith("not a bound: 130 GFLOP/s achieved")
    assert "%" not in mfu.ours


def test_an_older_record_keeps_no_emulated_bf16_peak_and_no_mfu_above_100() -> None:
    import json

    from benchmarks.harness import REPO

    record = json.loads((REPO / "benchmarks/results/train.json").read_text())
    rows = train_rows(record["results"])
    percents = [
        float(p)
        for r in rows
        if r.figure.startswith("MFU")
        for p in re.findall(r"([\d.]+)%", r.ours + " " + r.reference)
    ]
    assert all(p <= 100 for p in percents)
    if "avx512_bf16" not in record["results"]["machine"]:  # the stored AVX2 record
        assert not by_figure(rows, "bfloat16 peak")
        assert all("bfloat16" not in r.figure for r in rows)


# ----------------------------------------------------------------- decoding pairs


def decode_config(arch: dict, ours: float, hf: float, hf16: float | None) -> dict:
    row = {
        "arch": arch,
        "weights_dtype": "bfloat16",
        "ours_tokens_per_s": ours,
        "hf_tokens_per_s": hf,
        "ratio": ours / hf,
        "ours_first_token_s": 0.01,
        "hf_first_token_s": 0.02,
        "ours_far_over_near": 1.1,
        "hf_far_over_near": 1.3,
        "bytes_per_token": 250e6,
        "ours_bandwidth_utilisation": 0.57,
        "hf_bandwidth_utilisation": 0.2,
    }
    if hf16 is not None:
        row |= {
            "hf_bf16_tokens_per_s": hf16,
            "ratio_bf16": ours / hf16,
            "hf_bf16_bandwidth_utilisation": 0.3,
        }
    return row


def test_decoding_pairs_and_the_bandwidth_target_of_the_124m_shape() -> None:
    gpt2 = {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024, "vocab_size": 50257}
    small = gpt2 | {"n_layer": 6, "n_head": 6, "n_embd": 384}
    results: dict[str, Any] = {
        "machine": {"native_bf16": True, "last_level_cache_mb": 32.0},
        "configs": {
            "a": decode_config(small, 900.0, 170.0, 300.0),
            "b": decode_config(gpt2, 180.0, 50.0, 54.0),
        },
    }
    rows = generate_rows(results)
    same_dtype = by_figure(rows, "greedy decoding")
    assert [r.target for r in same_dtype] == [">= 2x", ">= 3x", ">= 2x", ">= 3x"]
    assert [r.met for r in same_dtype] == [True, True, True, True]
    bandwidth = by_figure(rows, "memory-bandwidth")
    assert [r.target for r in bandwidth] == ["", ">= 85%"]  # the 124M shape only
    assert bandwidth[1].met is False and bandwidth[1].ours == "57.0%"
    assert bandwidth[1].ratio == pytest.approx(0.57 / 0.3)  # against bf16 transformers
    results["machine"]["native_bf16"] = False  # an emulated bf16 pair has no target
    assert [r.target for r in by_figure(generate_rows(results), "greedy")][1] == ""


# ----------------------------------------------------------------- stale sections


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def commit_file(repo: Path, path: str, text: str) -> str:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    git(repo, "add", path)
    git(repo, "commit", "-q", "-m", f"change {path}")
    return git(repo, "rev-parse", "HEAD")


BPE_RESULTS = {
    "gptpipe": {"median_seconds": 1.0, "bytes_per_token": 3.2},
    "tokenizers": {"median_seconds": 1.0, "bytes_per_token": 3.2},
    "vocab_size": 1024,
    "corpus": "offline, 5 MB",
    "time_ratio": 1.0,
    "compression_ratio": 1.0,
}


def bpe_record(commit: str, dirty: bool = False, changed: tuple[str, ...] = ()) -> dict:
    env = environment(26, 2) | {"git": {"commit": commit, "dirty": dirty, "changed": list(changed)}}
    return {
        "date": "2026-12-06 10:00 UTC",
        "command": "python -m benchmarks.bench_bpe",
        "seconds": 1.0,
        "environment": env,
        "results": BPE_RESULTS,
    }


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    commit_file(tmp_path, "gptpipe/tokenizer/bpe.py", "v1\n")
    return tmp_path


def test_a_section_is_stale_once_the_code_it_measures_changes(repo: Path) -> None:
    measured = git(repo, "rev-parse", "HEAD")
    assert staleness("bpe", bpe_record(measured), repo) == ("", "")
    commit_file(repo, "README.md", "unrelated\n")
    assert staleness("bpe", bpe_record(measured), repo) == ("", "")
    commit_file(repo, "gptpipe/tokenizer/bpe.py", "v2\n")
    marker, why = staleness("bpe", bpe_record(measured), repo)
    assert marker == "stale"
    assert why == (
        f"Stale: gptpipe/tokenizer changed since this was measured (commit {measured[:7]}); "
        "rerun `python -m benchmarks.run_all --only bpe`."
    )
    page = render({"bpe": bpe_record(measured)}, repo=repo)
    assert why in page and "| bpe | 2 of 2 | 2026-12-06 10:00 UTC, **stale** |" in page


def test_a_commit_missing_from_the_history_or_a_dirty_run_is_unverified(repo: Path) -> None:
    marker, why = staleness("bpe", bpe_record("f" * 40), repo)
    assert marker == "unverified" and "its commit (fffffff) is not in this history" in why
    head = git(repo, "rev-parse", "HEAD")
    dirty = bpe_record(head, dirty=True, changed=("gptpipe/tokenizer/bpe.py",))
    marker, why = staleness("bpe", dirty, repo)
    assert marker == "unverified" and "uncommitted changes to gptpipe/tokenizer" in why
    elsewhere = bpe_record(head, dirty=True, changed=("README.md",))
    assert staleness("bpe", elsewhere, repo) == ("", "")


def test_every_measured_path_exists() -> None:
    from benchmarks.harness import REPO

    assert set(MEASURES) == set(SUMMARIES)
    missing = [p for paths in MEASURES.values() for p in paths if not (REPO / p).exists()]
    assert missing == []
