"""The rows of the results table: each benchmark's JSON results as figure / ours / reference /
ratio / target lines, and the Markdown page `benchmarks/RESULTS.md` made of them.

Ratio is always ours / reference. Whether higher or lower is better is in the target
(`>= 2x`, `<= 0.5x`); `met` is decided from the numbers, never written by hand.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.device_table import device_rows
from benchmarks.rows import Row

REPO = Path(__file__).resolve().parents[1]


def _at_least(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def _at_most(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


def _ratio(ours: float, reference: float) -> float | None:
    return ours / reference if reference else None


def _shape(arch: dict[str, int]) -> str:
    return (
        f"{arch['n_layer']}L/{arch['n_head']}H/{arch['n_embd']}d, context {arch['block_size']}, "
        f"vocab {arch['vocab_size']:,}"
    )


# ours in each dtype: what the CLI trains with in it (the allocator tuned, the fused head + loss)
OURS_IN = {"float32": "ours-fp32", "bfloat16": "ours-default"}
DTYPE_WORDS = {"float32": "float32", "bfloat16": "bf16 autocast"}


def _native_bf16(results: dict[str, Any]) -> bool:
    """Whether the training record's CPU computes bf16 natively (older records: its flags)."""
    if "native_bf16" in results:
        return bool(results["native_bf16"])
    return any(flag in results.get("machine", "") for flag in ("avx512_bf16", "amx_bf16"))


def _train_peaks(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{dtype: {gflops, how}}: the record's peaks; an older record's one measured 2048-square
    product per dtype, bf16's only where native (an emulated rate is no peak)."""
    if "peaks" in results:
        return dict(results["peaks"])
    return {
        dtype: {"gflops": gflops, "how": "measured: one 2048-square product (older record)"}
        for dtype, gflops in results["peaks_gflops"].items()
        if dtype == "float32" or _native_bf16(results)
    }


def _mfu(row: dict[str, Any], peak: dict[str, Any] | None) -> tuple[float | None, str]:
    """(MFU, its text) of one variant against `peak`: never above 100% in print. A step
    faster than the peak says the peak is not a bound, with both rates."""
    if peak is None:
        return None, "n/a"
    gflops = row["tokens_per_s"] * row["flops_per_token"] / 1e9
    value = gflops / peak["gflops"]
    if value > 1.0:
        return value, (
            f"not a bound: {gflops:,.0f} GFLOP/s achieved, above the {peak['gflops']:,.0f} "
            "GFLOP/s peak"
        )
    return value, f"{value:.1%}"


def train_rows(results: dict[str, Any]) -> list[Row]:
    """Per dtype: the peak MFU divides by (and which); per config and dtype, ours against
    transformers' fastest setting of the same dtype, and MFU. The default dtype's pair has
    the targets (>= 2x; on a native-bf16 CPU, MFU >= 50% of the bf16 peak)."""
    from benchmarks.bench_train import CONFIGS

    found = _train_peaks(results)
    threads = results.get("threads", 2)
    native = _native_bf16(results)
    rows = []
    for dtype, peak in found.items():
        measured = peak.get("measured") if peak.get("source") == "theoretical" else None
        wrong = peak.get("theoretical_below_measured")
        rows.append(
            Row(
                f"{dtype} peak, GFLOP/s on {threads} threads ({peak['how']})"
                + (" (the theoretical peak was below a measured rate: not used)" if wrong else ""),
                f"{peak['gflops']:,.0f}",
                f"measured best: {measured['gflops']:,.0f}" if measured else "",
            )
        )
    ours_name = results.get("ours_variant", "ours-default")
    default_dtype = "bfloat16" if ours_name == "ours-default" else "float32"
    for config, variants in results["configs"].items():
        shape = _shape(CONFIGS[config])
        for dtype, name in OURS_IN.items():
            ours = variants.get(name)
            refs = {
                n: v
                for n, v in variants.items()
                if v.get("settings", {}).get("impl") == "hf"
                and v.get("settings", {}).get("dtype") == dtype
            }
            if ours is None or not refs:
                continue
            words = DTYPE_WORDS[dtype]
            best = max(refs, key=lambda n: refs[n]["tokens_per_s"])
            ratio = _ratio(ours["tokens_per_s"], refs[best]["tokens_per_s"])
            targeted = dtype == default_dtype
            rows.append(
                Row(
                    f"pretraining tokens/s, {shape}, {words}: {name} vs transformers' fastest "
                    f"{words} setting ({best}, of {', '.join(refs)})",
                    f"{ours['tokens_per_s']:,.0f}",
                    f"{refs[best]['tokens_per_s']:,.0f}",
                    ratio,
                    ">= 2x" if targeted else "",
                    _at_least(ratio, 2.0) if targeted else None,
                )
            )
            mfu, text = _mfu(ours, found.get(dtype))
            _, ref_text = _mfu(refs[best], found.get(dtype))
            over = mfu is not None and mfu > 1.0
            targeted = targeted and dtype == "bfloat16" and native
            rows.append(
                Row(
                    f"MFU of {name}, {shape}, against the {dtype} peak"
                    + (" (above: that peak does not bound this step)" if over else ""),
                    text,
                    f"transformers ({best}): {ref_text}",
                    None,
                    ">= 50%" if targeted else ("a peak that bounds it" if over else ""),
                    False if over else (_at_least(mfu, 0.5) if targeted else None),
                )
            )
    return rows


GPT2_124M = {"n_layer": 12, "n_head": 12, "n_embd": 768, "vocab_size": 50257}


def _bandwidth_row(config: dict[str, Any], shape: str, llc: float | None) -> Row:
    """Ours' share of the measured copy bandwidth, against transformers' in the same dtype
    (where measured) and in float32; the 124M shape has the target (>= 85%)."""
    ours = config["ours_bandwidth_utilisation"]
    same = "hf_bf16_bandwidth_utilisation" in config and config.get("weights_dtype") == "bfloat16"
    ref = config["hf_bf16_bandwidth_utilisation"] if same else config["hf_bandwidth_utilisation"]
    reference = f"{config['hf_bandwidth_utilisation']:.1%}" + (
        f" float32 / {config['hf_bf16_bandwidth_utilisation']:.1%} bf16"
        if "hf_bf16_bandwidth_utilisation" in config
        else ""
    )
    fits = llc is not None and llc * 1e6 >= config["bytes_per_token"]
    is_124m = all(config["arch"].get(k) == v for k, v in GPT2_124M.items())
    probed = config.get("bandwidth_gb_per_s")
    return Row(
        "memory-bandwidth utilisation of the measured copy bandwidth"
        + (f" ({probed:.1f} GB/s, the median of probes beside the runs)" if probed else "")
        + f", {shape}"
        + (f", {config['weights_dtype']} weights" if "weights_dtype" in config else "")
        + (
            f" (against DRAM; the {llc:.0f} MB last-level cache can hold the weights)"
            if fits
            else f" (last-level cache: {llc:.0f} MB)"
            if llc
            else ""
        )
        + f" (vs transformers{', same dtype' if same else ''})",
        f"{ours:.1%}",
        reference,
        _ratio(ours, ref),
        ">= 85%" if is_124m else "",
        _at_least(ours, 0.85) if is_124m else None,
    )


def generate_rows(results: dict[str, Any]) -> list[Row]:
    """Per config: ours against transformers in float32 (>= 2x) and, where it ran, against
    transformers with bf16 weights (>= 3x where ours decodes in bf16 on a native-bf16 CPU);
    first token, far/near step, bandwidth (>= 85% for the 124M shape), layouts, compile."""
    rows = []
    llc = results.get("machine", {}).get("last_level_cache_mb")
    native = results.get("machine", {}).get("native_bf16")
    for config in results["configs"].values():
        shape = _shape(config["arch"])
        tps = _ratio(config["ours_tokens_per_s"], config["hf_tokens_per_s"])
        ttft = _ratio(config["ours_first_token_s"], config["hf_first_token_s"])
        weights = f", {config['weights_dtype']} weights" if "weights_dtype" in config else ""
        rows.append(
            Row(
                f"greedy decoding tokens/s, batch 1, {shape}{weights} (vs transformers.generate, "
                "float32)",
                f"{config['ours_tokens_per_s']:.1f}",
                f"{config['hf_tokens_per_s']:.1f}",
                tps,
                ">= 2x",
                _at_least(tps, 2.0),
            )
        )
        if "hf_bf16_tokens_per_s" in config:
            ratio = config["ratio_bf16"]
            targeted = bool(native) and config.get("weights_dtype") == "bfloat16"
            rows.append(
                Row(
                    f"greedy decoding tokens/s, batch 1, {shape}{weights} (vs "
                    "transformers.generate, bf16 weights)",
                    f"{config['ours_tokens_per_s']:.1f}",
                    f"{config['hf_bf16_tokens_per_s']:.1f}",
                    ratio,
                    ">= 3x" if targeted else "",
                    _at_least(ratio, 3.0) if targeted else None,
                )
            )
        rows += [
            Row(
                f"time to first token, {shape} (s)",
                f"{config['ours_first_token_s']:.3f}",
                f"{config['hf_first_token_s']:.3f}",
                ttft,
                "<= 1x",
                _at_most(ttft, 1.0),
            ),
            Row(
                f"time per token at the far / near position, {shape}"
                + (f", {config['cache_dtype']} cache" if "cache_dtype" in config else "")
                + (f" read by {config['cache_reader']}" if "cache_reader" in config else "")
                + (", fused step" if config.get("fused_step") else ""),
                f"{config['ours_far_over_near']:.2f}",
                f"{config['hf_far_over_near']:.2f}",
                None,
                "ours <= 1.25",
                _at_most(config["ours_far_over_near"], 1.25),
            ),
            _bandwidth_row(config, shape, llc),
        ]
        far = config.get("far_attention_s", {})
        kernel = {k: t for k, t in far.items() if k.endswith("kernel")}
        torch_only = {k: t for k, t in far.items() if k.endswith("torch")}
        if kernel and torch_only:  # records from before the kernel lack it
            best_k = min(kernel, key=lambda k: kernel[k])
            best_t = min(torch_only, key=lambda k: torch_only[k])
            rows.append(
                Row(
                    f"attention of one query over the full context, every layer, {shape}: "
                    f"ms, {best_k} (vs {best_t})",
                    f"{1e3 * kernel[best_k]:.2f}",
                    f"{1e3 * torch_only[best_t]:.2f}",
                    _ratio(kernel[best_k], torch_only[best_t]),
                )
            )
        if "ours_plain_layout_tokens_per_s" in config:  # records from before packing lack it
            chosen = sorted(set(config.get("layouts", {}).values()))
            rows.append(
                Row(
                    f"decode-time weight layout, {shape}: tokens/s "
                    + (", ".join(chosen) if chosen else "packed")
                    + " (vs plain)",
                    f"{config['ours_tokens_per_s']:.1f}",
                    f"{config['ours_plain_layout_tokens_per_s']:.1f}",
                    config.get("layout_over_plain", config.get("packed_over_plain")),
                )
            )
    compiled = results.get("compile")
    if compiled:
        rows.append(
            Row(
                "torch.compile of the decode step (plain layout), (a): tokens/s after "
                f"{compiled['compile_first_step_s']:.0f} s of compiling (vs eager, laid out)",
                f"{compiled['compiled_tokens_per_s']:.1f}",
                f"{compiled['eager_tokens_per_s']:.1f}",
                compiled["compiled_over_eager"],
            )
        )
    return rows


def shard_rows(results: dict[str, Any]) -> list[Row]:
    rows = []
    for size in results["sizes"].values():
        ours, ref = size["gptpipe"], size["tiktoken"]
        ratio = size.get("paired_ratio_median", size["throughput_ratio"])
        mb = f"{size['corpus_mb']:.0f} MB"
        rows.append(
            Row(
                f"sharding throughput, {mb} corpus (MB/s, vs tiktoken encode_ordinary_batch)",
                f"{ours['mb_per_s']:.1f}",
                f"{ref['mb_per_s']:.1f}",
                ratio,
                ">= 0.8x",
                _at_least(ratio, 0.8),
            )
        )
        rows.append(
            Row(
                f"sharding peak memory, {mb} corpus (MB)",
                f"{ours['peak_rss_mb']:.0f}",
                f"{ref['peak_rss_mb']:.0f}",
                _ratio(ours["peak_rss_mb"], ref["peak_rss_mb"]),
                "< 1,000 MB",
                ours["peak_rss_mb"] < 1000,
            )
        )
    return rows


def bpe_rows(results: dict[str, Any]) -> list[Row]:
    ours, ref = results["gptpipe"], results["tokenizers"]
    what = f"vocab {results['vocab_size']:,}, {results['corpus'].split(', ')[-1]}"
    return [
        Row(
            f"BPE training time, {what} (s, vs tokenizers)",
            f"{ours['median_seconds']:.2f}",
            f"{ref['median_seconds']:.2f}",
            results["time_ratio"],
            "<= 2x",
            _at_most(results["time_ratio"], 2.0),
        ),
        Row(
            "BPE compression on held-out text (bytes/token)",
            f"{ours['bytes_per_token']:.4f}",
            f"{ref['bytes_per_token']:.4f}",
            results["compression_ratio"],
            ">= 1x",
            _at_least(results["compression_ratio"], 1.0),
        ),
    ]


def download_rows(results: dict[str, Any]) -> list[Row]:
    sizes = sorted(results.values(), key=lambda s: s["corpus_mb"])
    smallest = sizes[0]
    rows = []
    for size in sizes:
        ratio = _ratio(size["peak_rss_mb"], smallest["peak_rss_mb"])
        rows.append(
            Row(
                f"download normalisation peak memory, {size['corpus_mb']:.0f} MB corpus (MB, vs "
                f"the {smallest['corpus_mb']:.0f} MB corpus)",
                f"{size['peak_rss_mb']:.0f}",
                f"{smallest['peak_rss_mb']:.0f}",
                ratio,
                "<= 1.2x (flat)",
                _at_most(ratio, 1.2),
            )
        )
    return rows


def evaluate_rows(results: dict[str, Any]) -> list[Row]:
    rows = []
    for config in results["configs"].values():
        ratio = config["ratio"]
        rows.append(
            Row(
                f"evaluation tokens/s, {_shape(config['arch'])}, stride {config['stride']} "
                "(vs a plain batched forward)",
                f"{config['ours_tokens_per_s']:,.0f}",
                f"{config['plain_tokens_per_s']:,.0f}",
                ratio,
                ">= 1x",
                _at_least(ratio, 1.0),
            )
        )
    return rows


def load_memory_rows(results: dict[str, Any]) -> list[Row]:
    fp32 = results["fp32_bytes"]
    reference = results.get("transformers", {}).get("peak_bytes")
    rows = []
    for mode, label in (
        ("convert", "converting into a model in memory"),
        ("stage", "the weights stage (streamed to disk)"),
        ("load", "loading the converted model folder"),
    ):
        if mode not in results:
            continue
        peak = results[mode]["peak_bytes"]
        rows.append(
            Row(
                f"{results['size']} weights, peak memory of {label} (GiB; x fp32 size)",
                f"{peak / 2**30:.2f} ({peak / fp32:.2f}x)",
                f"{reference / 2**30:.2f} (transformers)" if reference else "",
                _ratio(peak, reference) if reference else None,
                "<= 1.2x fp32 size",
                peak <= 1.2 * fp32,
            )
        )
    return rows


PUBLISHED = {"all": 0.9567, "last_blocks": 0.9567, "lora": 0.9667}


def classify_rows(results: dict[str, Any]) -> list[Row]:
    rows = []
    for variant, row in results["variants"].items():
        published = PUBLISHED[variant]
        rows.append(
            Row(
                f"SMS spam test accuracy, trainable {variant} ({row['train_seconds']:.0f} s, "
                f"{row['trainable_params']:,} parameters; vs published GPT-2 124M)",
                f"{row['test_accuracy']:.2%}",
                f"{published:.2%}",
                _ratio(row["test_accuracy"], published),
                ">= 95.67% in <= 300 s",
                row["test_accuracy"] >= 0.9567 and row["train_seconds"] <= 300,
            )
        )
    hit = results.get("time_to_target")
    if hit:
        rows.append(
            Row(
                f"time to {hit['target']:.2%} SMS spam test accuracy (s of fine-tuning; vs the "
                "5-minute budget)",
                f"{hit['train_seconds']:.0f} ({hit['epochs']} epochs)" if hit["reached"] else "not",
                "300",
                _ratio(hit["train_seconds"], 300) if hit["reached"] else None,
                "<= 1x",
                _at_most(hit["train_seconds"] / 300, 1.0) if hit["reached"] else False,
            )
        )
    return rows


def pipeline_rows(results: dict[str, Any]) -> list[Row]:
    kind = "tiny params" if results["quick"] else "the default params"
    return [
        Row(
            f"dvc repro with nothing to do (s; vs a trivial DAG of the same shape, "
            f"{results['stages']} stages)",
            f"{results['noop_s']:.2f}",
            f"{results['trivial_noop_s']:.2f}",
            results["noop_ratio"],
            "<= 1.5x",
            _at_most(results["noop_ratio"], 1.5),
        ),
        Row(
            f"end-to-end dvc repro, {kind} (s, {len(results['ran'])} stages)",
            f"{results['end_to_end_s']:.0f}",
        ),
    ]


def _time_to_3_5(figure: dict[str, Any]) -> str:
    """Part d of bench_seeds in words: when the training loss first reached 3.5, and its end."""
    reached = figure.get("reached_3_5")
    end = f"{figure['final_train_loss']:.2f} after {figure['steps']:,} steps"
    if not reached:
        return f"3.5 not reached; {end}"
    return (
        f"3.5 after {reached['train_seconds']:.0f} s of training (step {reached['step']:,}); {end}"
    )


def _side_loss(side: dict[str, Any]) -> str:
    """A seed003 side's held-out loss: the median, and its range where repeats trained under
    several seeds."""
    losses = side.get("heldout_losses", [])
    median = f"{side['heldout_loss']:.4f}"
    if len(set(side.get("seeds", []))) < 2:
        return median
    return f"{median} (median of {len(losses)} seeds, {min(losses):.3f}–{max(losses):.3f})"


def _variant_items(variant: dict[str, Any]) -> list[tuple[str, Any]]:
    """The keys a seed003 variant sets beyond the preset. Records from before part a trained
    the preset's own max_steps (their sides have no `steps`) set it to nanoGPT's 2,000 for
    every side: not a change there."""
    old = "steps" not in variant
    return [
        (f"{section}.{key}", value)
        for section, values in variant["overrides"].items()
        for key, value in values.items()
        if not (old and (section, key) == ("pretrain", "max_steps"))
    ]


def _variant_changes(variant: dict[str, Any]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in _variant_items(variant))


def _step_floor(batch: str, times: dict[str, Any]) -> Row:
    """Part e's floor of seed003's step: its Linear layers' products alone, against nanoGPT's
    whole step. At 0.5x or more, half of nanoGPT's time at that batch cannot be had here."""
    return Row(
        f"seed003's step floor, batch {batch}: its Linear layers' {times['floor_dtype']} matrix "
        "products alone, each shape timed on its own (ms; vs nanoGPT's whole step; at 0.5x or "
        "more no step of this shape takes half of nanoGPT's on this machine)",
        f"{times['floor_ms']:.1f}",
        f"{times['nanogpt_ms']:.1f}",
        times["floor_ratio"],
    )


def _seed003_floor_line(step: dict[str, Any], machine: str | None = None) -> str:
    """The seeds table's line on what a seed003 step at nanoGPT's batch cannot go below on the
    machine part e ran on (`machine`, named where given: it may differ from the other parts')."""
    where = f" ({machine}, {step['floor_dtype']})" if machine else ""
    reach = (
        "so half of nanoGPT's time is out of reach on this CPU"
        if step["floor_ratio"] >= 0.5
        else "so the floor leaves room for half of nanoGPT's time on this CPU"
    )
    return (
        f"| 003, its step | | at nanoGPT's batch (12) the step's {step['floor_dtype']} Linear "
        f"products alone take {step['floor_ms']:.1f} ms, {step['floor_ratio']:.2f}x nanoGPT's "
        f"whole step ({step['nanogpt_ms']:.1f} ms; ours {step['ours_ms']:.1f} ms), {reach} | "
        f"the same machine{where} | "
        '`python -m benchmarks.run_all --only seeds --with "seeds=--parts e"` |'
    )


def seeds_rows(results: dict[str, Any]) -> list[Row]:
    rows = []
    if "seed003" in results:
        a = results["seed003"]
        ours, ref = a["ours"], a["nanogpt"]
        rows.append(
            Row(
                f"seed003 (char Shakespeare): held-out loss, time (vs nanoGPT, "
                f"{a['iterations']:,} iterations)"
                + (f"; ours {ours['steps']:,} steps" if "steps" in ours else ""),
                f"{_side_loss(ours)} in {ours['seconds']:.0f} s",
                f"{ref['heldout_loss']:.4f} in {ref['seconds']:.0f} s",
                a["time_ratio"],
                "loss <= 1.886 in <= 0.5x",
                a["meets_target"],
            )
        )
        # every variant of the run (records from before several variants hold one)
        variants = a.get("variants") or ([a["variant"]] if a.get("variant") else [])
        for variant in variants:
            rows.append(
                Row(
                    f"seed003 with {_variant_changes(variant)} (same run)",
                    f"{_side_loss(variant)} in {variant['seconds']:.0f} s",
                    f"{ref['heldout_loss']:.4f} in {ref['seconds']:.0f} s",
                    variant["time_ratio"],
                    "loss <= 1.886 in <= 0.5x",
                    variant["meets_target"],
                )
            )
    step = results.get("seed003_step")
    if step:
        for batch, times in step["batches"].items():
            rows.append(
                Row(
                    f"seed003's training step alone, batch {batch} (ms; vs nanoGPT's model.py "
                    "and loop, one process, alternating rounds)",
                    f"{times['ours_ms']:.1f}",
                    f"{times['nanogpt_ms']:.1f}",
                    times["ratio"],
                )
            )
            if "floor_ms" in times:
                rows.append(_step_floor(batch, times))
    if "seed001" in results:
        b = results["seed001"]
        ours, ref = b["ours"], b["reference"]
        selection = b.get("selection")
        chosen = (
            f"; settings chosen among {len(selection['candidates'])} on a validation cut of the "
            "training text"
            if selection
            else "; settings not chosen on a validation cut (an older record)"
        )
        margin = f"; margin {b['margin']:+.3f} against 4.75" if "margin" in b else ""
        rows.append(
            Row(
                "seed001 (GPT-2 BPE Shakespeare, 4/4/128): held-out loss per GPT-2 token, time "
                f"(vs transformers GPT2LMHeadModel, nanoGPT's loop){chosen}",
                f"{_side_loss(ours)} in {ours['seconds']:.0f} s{margin}",
                f"{ref['heldout_loss']:.4f} in {ref['seconds']:.0f} s",
                b["time_ratio"],
                "loss <= 4.75 within the reference's time",
                b["meets_target"],
            )
        )
        own = b.get("seed001_own_figure")
        if own:
            reached = own.get("reached_3_5")
            rows.append(
                Row(
                    "seed 001's own figure: training loss 3.5 (the seed: after 2-3 h at ~1,000 "
                    "tokens/s), in the seed001 run above (it stops at its best held-out loss)",
                    f"final train loss {own['final_train_loss']:.3f}; "
                    + (
                        f"3.5 after {reached['train_seconds']:.0f} s of training"
                        if reached
                        else "3.5 not reached"
                    ),
                    "2-3 h",
                )
            )
    figure = results.get("seed001_figure")
    if figure:
        rows.append(
            Row(
                f"seed 001's own figure, the seed001 preset trained on (early stopping off, "
                f"{figure['steps']:,} steps): training loss 3.5 per GPT-2 token",
                _time_to_3_5(figure),
                "2-3 h",
            )
        )
    if "seed000" in results:
        c = results["seed000"]
        rows.append(
            Row(
                "seed000 (word-level, 1 block 512 wide, context 56, offline documents): "
                "perplexity on the training batches; on held-out documents",
                f"{c['train_perplexity']:.2f}; {c['heldout_perplexity']:.2f}",
                "1.21 (the seed's, on its training set)",
            )
        )
    return rows


def serve_rows(results: dict[str, Any]) -> list[Row]:
    c, dtype = results["clients"], results["dtype"]
    where = (
        f"{_shape(results['arch'])}, {dtype} weights, {results['requests']} streamed requests "
        f"of {results['new_tokens']} tokens"
    )
    one, four, sixteen = c["1"], c["4"], c["16"]
    rows = [
        Row(
            f"gptpipe serve --batch 16: aggregate tokens/s, 16 concurrent clients (vs 1), {where}",
            f"{sixteen['tokens_per_s']:,.0f}",
            f"{one['tokens_per_s']:,.0f}",
            results["sixteen_over_one"],
            ">= 4x",
            _at_least(results["sixteen_over_one"], 4.0),
        ),
        Row(
            "gptpipe serve: aggregate tokens/s, 4 concurrent clients (vs 1)",
            f"{four['tokens_per_s']:,.0f}",
            f"{one['tokens_per_s']:,.0f}",
            results["four_over_one"],
        ),
        Row(
            "gptpipe serve: time to first token p50 / p99 at 1, 4, 16 clients (ms)",
            ", ".join(
                f"{1e3 * c[n]['first_token_p50_s']:.0f} / {1e3 * c[n]['first_token_p99_s']:.0f}"
                for n in ("1", "4", "16")
            ),
        ),
        Row(
            "one client through gptpipe serve (vs gptpipe generate's functions in process, "
            f"{results['inprocess']['dtype']}), tokens/s",
            f"{one['tokens_per_s']:,.1f}",
            f"{results['inprocess']['tokens_per_s']:,.1f}",
            results["server_over_inprocess"],
            ">= 0.8x",
            _at_least(results["server_over_inprocess"], 0.8),
        ),
    ]
    engine = results["engine"]
    rows.append(
        Row(
            "the server's engine alone, no HTTP (the decoding's share of the above): tokens/s "
            "at 16 clients (vs 1)",
            f"{engine['16']['tokens_per_s']:,.0f}",
            f"{engine['1']['tokens_per_s']:,.0f}",
            results["engine_sixteen_over_one"],
        )
    )
    rows.append(
        Row(
            "one client: the server's engine alone, no HTTP (vs gptpipe generate's functions in "
            "process), tokens/s: what the one-client 0.8x target has left for HTTP",
            f"{engine['1']['tokens_per_s']:,.1f}",
            f"{results['inprocess']['tokens_per_s']:,.1f}",
            engine["1"]["tokens_per_s"] / results["inprocess"]["tokens_per_s"],
        )
    )
    for dtype_name, pair in results["transformers"].items():
        rows.append(
            Row(
                f"the requests one at a time through gptpipe serve, {dtype_name} (vs "
                f"transformers generate in a loop, {dtype_name} weights), tokens/s",
                f"{pair['server_tokens_per_s']:,.1f}",
                f"{pair['transformers_tokens_per_s']:,.1f}",
                pair["ratio"],
            )
        )
    mem = results["memory"]
    rows += [
        Row(
            f"gptpipe serve peak RSS after {mem['requests']:,} requests of "
            f"{mem['new_tokens']} tokens, {mem['at_once']} at a time (MB; vs after the first "
            f"{mem['first']})",
            f"{mem['peak_all_mb']:,.0f}",
            f"{mem['peak_first_mb']:,.0f}",
            mem["peak_ratio"],
            "<= 1.1x",
            _at_most(mem["peak_ratio"], 1.1),
        ),
        Row(
            "gptpipe serve: memory-bandwidth utilisation per batched step at 1 / 16 clients "
            f"({dtype} weights, {results['cache_dtype']} cache)",
            f"{one['bandwidth_utilisation']:.1%} / {sixteen['bandwidth_utilisation']:.1%}",
        ),
    ]
    return rows


def bigdata_rows(results: dict[str, Any]) -> list[Row]:
    """The largest corpus against the smallest (memory flat, BPE time bounded by its sample),
    and at every size the shard stage against tiktoken on the same text."""
    sizes = sorted(results["sizes"].values(), key=lambda s: s["corpus_mb"])
    small, large = sizes[0], sizes[-1]
    what = f"{large['corpus_mb']:,.0f} MB vs {small['corpus_mb']:,.0f} MB Parquet corpus"
    rows = []
    for name in ("download", "tokenizer", "shard"):
        ours, ref = large["stages"][name]["peak_rss_mb"], small["stages"][name]["peak_rss_mb"]
        ratio = _ratio(ours, ref)
        rows.append(
            Row(
                f"big data: {name} peak memory, {what} (MB)",
                f"{ours:.0f}",
                f"{ref:.0f}",
                ratio,
                "<= 1.2x (flat)",
                _at_most(ratio, 1.2),
            )
        )
    ours_s = large["stages"]["tokenizer"]["stage_seconds"]
    ref_s = small["stages"]["tokenizer"]["stage_seconds"]
    rows.append(
        Row(
            f"big data: BPE tokenizer time (vocab {results['vocab_size']:,}, sample "
            f"{results['sample_mb']:g} MB), {what} (s)",
            f"{ours_s:.1f}",
            f"{ref_s:.1f}",
            _ratio(ours_s, ref_s),
            "<= 1.2x (bounded)",
            _at_most(_ratio(ours_s, ref_s), 1.2),
        )
    )
    for size in sizes:
        ratio = size["shard_vs_tiktoken"]
        pairs = size.get("pairs", results.get("repeat", 1))
        rows.append(
            Row(
                f"big data: shard throughput, {size['corpus_mb']:,.0f} MB corpus (MB/s, vs "
                f"tiktoken encode_ordinary_batch, {results['threads']} threads; "
                f"{'median of ' + str(pairs) + ' alternated pairs' if pairs > 1 else 'one pair'})",
                f"{size['stages']['shard']['mb_per_s']:.2f}",
                f"{size['tiktoken']['mb_per_s']:.2f}",
                ratio,
                ">= 1x",
                _at_least(ratio, 1.0),
            )
        )
    for size in (large, small):
        times = " / ".join(f"{size['stages'][n]['seconds']:.0f}" for n in size["stages"])
        rows.append(
            Row(
                f"big data: download / tokenizer / shard wall time, {size['corpus_mb']:,.0f} MB "
                "corpus (s, each a process)",
                times,
            )
        )
    return rows


SUMMARIES: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "train": train_rows,
    "generate": generate_rows,
    "serve": serve_rows,
    "evaluate": evaluate_rows,
    "shard": shard_rows,
    "bpe": bpe_rows,
    "download": download_rows,
    "bigdata": bigdata_rows,
    "load_memory": load_memory_rows,
    "classify": classify_rows,
    "pipeline": pipeline_rows,
    "seeds": seeds_rows,
    "device": device_rows,  # written on a GPU machine by benchmarks/device_check.sh
}


# What each benchmark measures (repository paths: its module and workers, the code it runs):
# a section is stale when any of these changed after its record's commit.
_B, _W = "benchmarks/bench_", "benchmarks/workers/"
MEASURES: dict[str, tuple[str, ...]] = {
    "bpe": (f"{_B}bpe.py", f"{_W}bpe_ours.py", f"{_W}bpe_theirs.py", "gptpipe/tokenizer"),
    "shard": (
        f"{_B}shard.py",
        f"{_W}shard_ours.py",
        f"{_W}shard_theirs.py",
        "stages/shard.py",
        "gptpipe/tokenizer",
        "gptpipe/tokens",
    ),
    "download": (f"{_B}download.py", "stages/download.py", "gptpipe/sources"),
    "bigdata": (
        f"{_B}bigdata.py",
        f"{_W}bigdata_corpus.py",
        f"{_W}bigdata_tiktoken.py",
        "stages/download.py",
        "stages/tokenizer.py",
        "stages/shard.py",
        "gptpipe/sources",
        "gptpipe/tokenizer",
        "gptpipe/tokens",
    ),
    "evaluate": (f"{_B}evaluate.py", "gptpipe/evaluation.py", "gptpipe/model"),
    "generate": (
        f"{_B}generate.py",
        "gptpipe/generate",
        "gptpipe/model",
        "gptpipe/interop",
        "gptpipe/runtime.py",
    ),
    "serve": (
        f"{_B}serve.py",
        f"{_W}serve_alone.py",
        "gptpipe/serve",
        "gptpipe/generate",
        "gptpipe/model",
        "gptpipe/decoding.py",
    ),
    "train": (
        f"{_B}train.py",
        "benchmarks/peaks.py",
        "gptpipe/model",
        "gptpipe/train",
        "gptpipe/runtime.py",
    ),
    "load_memory": (
        f"{_B}load_memory.py",
        f"{_W}load_memory.py",
        "stages/weights.py",
        "gptpipe/interop",
        "gptpipe/model",
    ),
    "pipeline": (f"{_B}pipeline.py", "dvc.yaml", "params.yaml", "stages", "gptpipe"),
    "classify": (
        f"{_B}classify.py",
        "stages/finetune_classify.py",
        "gptpipe/finetune",
        "gptpipe/model",
        "gptpipe/train",
    ),
    "device": (
        f"{_B}device.py",
        "benchmarks/device_check.sh",
        "gptpipe/model",
        "gptpipe/train",
        "gptpipe/generate",
    ),
    "seeds": (
        f"{_B}seeds.py",
        f"{_W}seeds_ref_loop.py",
        f"{_W}seeds_score.py",
        f"{_W}seeds_step.py",
        "gptpipe/presets",
        "gptpipe/model",
        "gptpipe/train",
        "stages",
    ),
}


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def staleness(name: str, record: dict[str, Any], repo: Path | None = None) -> tuple[str, str]:
    """("", "") when the code `name` measures (`MEASURES`) is what its record measured; else
    (a marker for the summary: "stale" or "unverified", the sentence that says why). Stale:
    a measured path changed between the record's commit and HEAD (`git diff <commit> HEAD --
    paths`). Unverified: its commit is not in this history, or was not recorded, or the
    run had uncommitted changes to measured paths (the record's `dirty` flag). Outside a git
    checkout nothing can be told: ("", "")."""
    repo = repo or REPO
    head = _git(repo, "rev-parse", "--verify", "--quiet", "HEAD")
    if head is None or head.returncode != 0:
        return "", ""
    paths = MEASURES.get(name, ())
    git = record.get("environment", {}).get("git", {}) or {}
    commit = git.get("commit")
    rerun = f"rerun `python -m benchmarks.run_all --only {name}`"
    if not commit:
        return "unverified", f"Unverified: its commit was not recorded; {rerun}."
    short = commit[:7]
    found = _git(repo, "cat-file", "-e", f"{commit}^{{commit}}")
    if found is None or found.returncode != 0:
        return "unverified", (
            f"Unverified: its commit ({short}) is not in this history, so what changed since "
            f"cannot be told; {rerun}."
        )

    def under(files: list[str]) -> list[str]:
        return [p for p in paths if any(f == p or f.startswith(p.rstrip("/") + "/") for f in files)]

    diff = _git(repo, "diff", "--name-only", commit, "HEAD", "--", *paths)
    changed = under(diff.stdout.split()) if diff is not None and diff.returncode == 0 else []
    edited = under(list(git.get("changed", []))) if git.get("dirty") else []
    notes = []
    if changed:
        notes.append(
            f"Stale: {', '.join(changed)} changed since this was measured (commit {short})"
        )
    if edited:
        notes.append(
            f"{'and it' if changed else 'Unverified: it'} was measured with uncommitted changes "
            f"to {', '.join(edited)} on top of commit {short}"
        )
    if not notes:
        return "", ""
    return ("stale" if changed else "unverified"), "; ".join(notes) + f"; {rerun}."


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _met(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "**no**")


def machine_line(environment: dict[str, Any]) -> str:
    cpu = environment.get("cpu", {})
    flags = [name for name, present in cpu.get("flags", {}).items() if present]
    gpus = ", ".join(g["name"] for g in environment.get("gpus", [])) or "no GPU"
    memory = environment.get("memory_bytes")
    ram = f"{memory / 2**30:.0f} GiB RAM" if memory else "RAM unknown"
    lacks = [f for f in ("avx512_bf16", "amx_bf16") if not cpu.get("flags", {}).get(f)]
    numbers = (
        f" (family {cpu['family']}, model {cpu['model_number']})"
        if cpu.get("family") is not None and cpu.get("model_number") is not None
        else " (family and model not recorded)"  # records from before they were
    )
    return (
        f"{cpu.get('model')}{numbers}, {cpu.get('cores')} cores / {cpu.get('threads')} "
        f"threads, flags "
        f"{' '.join(flags) or 'none of interest'}"
        + (f" (no {', no '.join(lacks)})" if lacks else "")
        + f", {ram}, {gpus}"
    )


def versions_line(environment: dict[str, Any]) -> str:
    packages = environment.get("packages", {})
    listed = ", ".join(f"{name} {version}" for name, version in packages.items() if version)
    return f"Python {environment.get('python')}, {listed}"


def _reused_line(results: dict[str, Any]) -> list[str]:
    """The parts a run kept from an earlier one (`--reuse`), each with its own date and
    machine, so a section measured in several runs says which figure came from which."""
    kept = [
        f"{key} on {part.get('date', '?')} ({part.get('machine', '?')})"
        for key, part in results.items()
        if isinstance(part, dict) and part.get("reused_from")
    ]
    return (
        ["", "Kept from earlier runs of the same command: " + "; ".join(kept) + "."] if kept else []
    )


def render(
    records: dict[str, dict[str, Any]], title: str = "Benchmark results", repo: Path | None = None
) -> str:
    """RESULTS.md from {benchmark name: record}; a record is what `run_all` stores: `date`,
    `command`, `environment`, `results`, `seconds`. Each section says whether the code it
    measures changed since (`staleness`, against the git checkout `repo`, default this one)."""
    sections, summary = [], []
    first = next(iter(records.values()), None)
    for name, record in records.items():
        rows = SUMMARIES[name](record["results"])
        met = [r.met for r in rows if r.met is not None]
        marker, why = staleness(name, record, repo)
        when = record["date"] + (f", **{marker}**" if marker else "")
        summary.append(f"| {name} | {sum(met)} of {len(met)} | {when} |")
        where = machine_line(record["environment"]) + "; " + versions_line(record["environment"])
        same = first is not None and where == (
            machine_line(first["environment"]) + "; " + versions_line(first["environment"])
        )
        sections += [
            f"## {name}",
            "",
            f"Measured {record['date']} by `{record['command']}` ({record['seconds']:.0f} s)"
            + (", on the machine above." if same else f", on {where}."),
            *_reused_line(record["results"]),
            *(["", why] if why else []),
            "",
            "| figure | ours | reference | ratio | target | met |",
            "|---|---|---|---|---|---|",
        ]
        for row in rows:
            ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
            cells = [row.figure, row.ours, row.reference, ratio, row.target, _met(row.met)]
            sections.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        sections.append("")
    lines = [
        f"# {title}",
        "",
        "Written by `make bench` (`python -m benchmarks.run_all`); one benchmark again: "
        "`python -m benchmarks.run_all --only NAME`. Every figure is measured beside its "
        "reference in the same run on the same machine, sides alternated, medians of repeats; "
        "**ratio = ours / reference** (the target says which way is better). These machines "
        "change between sessions: each section says when it was measured, and on what if not "
        "on the machine below; a section whose code changed after its commit says it is stale "
        "(the summary marks it), and how to rerun it.",
        "",
    ]
    if first is not None:
        lines += [
            f"Machine: {machine_line(first['environment'])}.",
            "",
            f"Software: {versions_line(first['environment'])}; commit "
            f"`{first['environment'].get('git', {}).get('commit', '?')[:10]}`.",
            "",
            "| benchmark | targets met | measured |",
            "|---|---|---|",
            *summary,
            "",
        ]
    return "\n".join(lines + sections)


def readme_table(records: dict[str, dict[str, Any]]) -> str:
    """All figures in one table for the README (RESULTS.md has the commands and machines)."""
    if not records:
        return "No stored results yet: run `make bench`."
    machines: dict[str, list[str]] = {}
    for name, record in records.items():
        machines.setdefault(machine_line(record["environment"]), []).append(name)
    where = "; ".join(f"{', '.join(names)} on {line}" for line, names in machines.items())
    lines = [
        f"Stored results ([benchmarks/RESULTS.md](benchmarks/RESULTS.md) has each run's date, "
        f"command and machine): {where}.",
        "",
        "| benchmark | figure | ours | reference | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, record in records.items():
        for row in SUMMARIES[name](record["results"]):
            ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
            cells = [name, row.figure, row.ours, row.reference, ratio, row.target, _met(row.met)]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


SEEDS_COMMAND = "`python -m benchmarks.run_all --only seeds`"


def seeds_table(records: dict[str, dict[str, Any]]) -> str:
    """The README's table of the seed systems: each seed's own figure, ours, the reference
    run beside it, and the command that reproduces the row (from the stored records)."""
    seeds = records.get("seeds", {}).get("results", {})
    lines = [
        "| seed | its figure | ours | reference, same run | reproduce |",
        "|---|---|---|---|---|",
    ]
    c = seeds.get("seed000")
    if c:
        lines.append(
            "| 000 word-level GPT | perplexity 1.21 on its training set (372 tickets) | "
            f"perplexity {c['train_perplexity']:.2f} on the training batches, "
            f"{c['heldout_perplexity']:.2f} on held-out documents (offline corpus) | | "
            f"{SEEDS_COMMAND} |"
        )
    b = seeds.get("seed001")
    if b:
        ours, ref, own = b["ours"], b["reference"], b.get("seed001_own_figure") or {}
        figure = seeds.get("seed001_figure")
        when = (
            f"trained on: {_time_to_3_5(figure)}"
            if figure
            else f"training loss {own.get('final_train_loss', float('nan')):.2f} at the end"
        )
        lines.append(
            "| 001 GPT-2 BPE Shakespeare | training loss 3.5 after 2-3 h of CPU | "
            f"held-out loss {_side_loss(ours)} per GPT-2 token in {ours['seconds']:.0f} s"
            + (f" (margin {b['margin']:+.3f} against 4.75)" if "margin" in b else "")
            + (
                "; settings chosen on a validation cut of the training text"
                if b.get("selection")
                else ""
            )
            + f"; {when} | "
            f"`transformers` GPT-2 under nanoGPT's loop: {ref['heldout_loss']:.3f} in "
            f"{ref['seconds']:.0f} s | {SEEDS_COMMAND} |"
        )
    lines.append(
        "| 002 tiktoken notebooks | none published (its future-extensions list is all here) | "
        "AdamW + schedule, top-k/top-p, LoRA, perplexity, attention maps in one preset | | "
        "`gptpipe preset seed002 --write && dvc repro` |"
    )
    a = seeds.get("seed003")
    if a:
        ours, ref = a["ours"], a["nanogpt"]
        lines.append(
            "| 003 char-level GPT | nanoGPT's CPU run: val loss 1.886 in 69 s | "
            f"held-out loss {_side_loss(ours)} in {ours['seconds']:.0f} s "
            f"({a['time_ratio']:.2f}x nanoGPT's time) | nanoGPT 3adf61e: "
            f"{ref['heldout_loss']:.4f} in {ref['seconds']:.0f} s (its own estimate "
            f"{ref['val_loss_own_estimate']:.3f}) | {SEEDS_COMMAND} |"
        )
        variant = a.get("variant")
        if variant:
            repeats = a.get("repeats", seeds.get("repeats", 1))
            flags = (f"--repeats {repeats} " if repeats > 1 else "") + " ".join(
                f"--a-variant {key}={value}" for key, value in _variant_items(variant)
            )
            lines.append(
                f"| 003, same run | | with {_variant_changes(variant)}: held-out loss "
                f"{_side_loss(variant)} in {variant['seconds']:.0f} s "
                f"({variant['time_ratio']:.2f}x nanoGPT's time) | the same nanoGPT run | "
                f'`python -m benchmarks.run_all --only seeds --with "seeds=--parts a {flags}"` |'
            )
    part_e = seeds.get("seed003_step", {})
    step = part_e.get("batches", {}).get("12", {})
    if "floor_ms" in step:
        lines.append(_seed003_floor_line(step, part_e.get("machine")))
    variants = records.get("classify", {}).get("results", {}).get("variants", {})
    if variants:
        best = max(variants, key=lambda v: variants[v]["test_accuracy"])
        row = variants[best]
        lines.append(
            "| 004 GPT-2 spam + instructions | SMS spam 95.67% (GPT-2 124M, last block) | "
            f"{row['test_accuracy']:.2%} (trainable {best}, {row['train_seconds']:.0f} s, from "
            "the default run's base; the 124M preset needs OpenAI's weights) | | "
            "`python -m benchmarks.run_all --only pipeline,classify` |"
        )
    return "\n".join(lines)
