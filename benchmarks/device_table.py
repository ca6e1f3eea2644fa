"""The rows of the GPU check's section of the results table (`benchmarks/bench_device.py`,
run by benchmarks/device_check.sh): the card and its peak, the CUDA tests' outcome, training
tokens/s and MFU at GPT-2 124M's shape against transformers in bf16 (eager and compiled),
and decoding at batch 1 and 16.

A variant that failed or was not run shows its error instead of a figure. A run on the CPU
(`--quick --device cpu`, the test suite's smoke run) says so in its first row: only a run on
a GPU gives GPU figures.
"""

from __future__ import annotations

from typing import Any

from benchmarks.rows import Row


def _shape(arch: dict[str, Any]) -> str:
    return (
        f"{arch['n_layer']}L/{arch['n_head']}H/{arch['n_embd']}d, context {arch['block_size']}, "
        f"vocab {arch['vocab_size']:,}"
    )


def _tps(side: dict[str, Any] | None) -> str:
    if side is None:
        return "not measured"
    if "error" in side:
        return f"failed: {side['error']}"
    return f"{side['tokens_per_s']:,.0f}"


def _ratio(ours: dict[str, Any] | None, ref: dict[str, Any] | None) -> float | None:
    if not ours or not ref or "tokens_per_s" not in ours or "tokens_per_s" not in ref:
        return None
    return float(ours["tokens_per_s"]) / float(ref["tokens_per_s"]) if ref["tokens_per_s"] else None


def _mfu(side: dict[str, Any] | None) -> str:
    value = (side or {}).get("mfu")
    return "n/a" if value is None else f"{value:.1%}"


def device_rows(results: dict[str, Any]) -> list[Row]:
    """The section's rows from bench_device's results."""
    quick = " (quick: smoke-run sizes, not figures)" if results.get("quick") else ""
    on_gpu = results.get("device") == "cuda"
    where = (
        f"{results.get('device_name')}, torch {results.get('torch')}, CUDA {results.get('cuda')}"
        if on_gpu
        else f"the CPU ({results.get('device_name')}): not a GPU figure"
    )
    rows = [Row(f"device{quick}", where, results.get("peak_source", ""))]
    tests = results.get("cuda_tests")
    if tests is not None:
        if "error" in tests:
            rows.append(
                Row(
                    "CUDA tests (pytest -m cuda tests/cuda)",
                    tests["error"],
                    "",
                    None,
                    "none fail",
                    False,
                )
            )
        else:
            bad = tests["failed"] + tests["errors"]
            rows.append(
                Row(
                    "CUDA tests (pytest -m cuda tests/cuda): passed / failed / skipped",
                    f"{tests['passed']} / {bad} / {tests['skipped']}",
                    ", ".join(tests.get("not_passed", [])),
                    None,
                    "none fail",
                    bad == 0 and tests["passed"] > 0,
                )
            )
    train = results["train"]
    variants = train["variants"]
    shape = f"{_shape(train['arch'])}, batch {train['batch']}, {train['dtype']} autocast"
    for ours_name, ref_name, how in (
        ("ours", "hf", "eager"),
        ("ours-compiled", "hf-compiled", "torch.compile"),
    ):
        ours, ref = variants.get(ours_name), variants.get(ref_name)
        if ours is None and ref is None:
            continue
        rows.append(
            Row(
                f"training tokens/s, {shape}, {how} (vs transformers GPT2LMHeadModel, {how}, "
                "same dtype and step)",
                _tps(ours),
                _tps(ref),
                _ratio(ours, ref),
            )
        )
    peak = results.get("peak_bf16_tflops")
    rows.append(
        Row(
            f"MFU eager / compiled, {shape}"
            + (f" (against {peak:,.0f} TFLOP/s dense bf16)" if peak else " (no published peak)"),
            f"{_mfu(variants.get('ours'))} / {_mfu(variants.get('ours-compiled'))}",
            f"transformers: {_mfu(variants.get('hf'))} / {_mfu(variants.get('hf-compiled'))}",
        )
    )
    decode = results["decode"]
    if "error" in decode:
        rows.append(Row("greedy decoding", f"failed: {decode['error']}"))
    for batch, pair in decode["batches"].items():
        figure = (
            f"greedy decoding tokens/s, batch {batch}, {_shape(decode['arch'])}, "
            f"{decode['dtype']} weights, {decode['prompt_tokens']}-token prompt, "
            f"{decode['new_tokens']} new tokens, prefill included (vs transformers.generate, "
            f"{decode['dtype']} weights)"
        )
        if "error" in pair:
            rows.append(Row(figure, f"failed: {pair['error']}"))
            continue
        agreement = f"; tokens equal to transformers' {pair['agreement']:.0%}"
        rows.append(Row(figure + agreement, _tps(pair["ours"]), _tps(pair["hf"]), pair["ratio"]))
    return rows
