"""Training speed: gptpipe's training step against transformers' GPT2LMHeadModel, same config,
in each dtype: float32 against float32, bf16 autocast against bf16 autocast.

Each measurement runs in its own subprocess (fresh allocator, fresh thread pool, no state
carried between variants), and the variants alternate within each repeat, so slow drift of the
machine hits all of them alike; the figure of a variant is the median over repeats. A step is
forward + backward + gradient clipping + AdamW on one batch of `batch x context` tokens, with
dropout 0 and the same thread count everywhere, through the training loop's own
`optimizer_step` for both models (its bf16 autocast wraps transformers' forward as it wraps
ours). Model FLOPs utilisation (MFU) divides 6N + 12*L*d*T FLOPs per token
(`benchmarks.peaks.flops_per_token`) x tokens/s by the peak of the variant's dtype on the same
threads: the CPU's theoretical peak where it can be read, else the best rate of several
well-shaped products measured in the same run (`benchmarks.peaks`; the record says which). An
MFU above 100% is recorded as such (`mfu_exceeds_peak`), never clamped: that peak does not
bound the step. bf16 (its peak, its variants) only runs where the CPU computes bf16 natively
(AVX-512 BF16 or AMX): emulated bf16 runs ~100x slower and its rate is no peak.

Default variants: transformers eager and compiled, and ours, in float32, and where bf16 is
native the same three in bf16 (`hf-bf16`, `hf-bf16-compiled`, `ours-default`); the rest
(`hf-tuned`, `hf-bf16-tuned`, `ours-*-plain`, `ours-bf16-untuned`, `ours-compiled`) by
`--variants`. Expected time of the default run (3 repeats, as `run_all` runs it) on a 2-core
AMD EPYC (Zen 5, AVX-512 BF16): about 20-25 minutes (estimated from the per-step rates and
~45 s of compiling per compiled measurement, every repeat: half the time), of which the peaks
take about a minute; on a float32-only CPU the bf16 half is left out and its slower float32
steps take about as long.

    .venv/bin/python -m benchmarks.bench_train                 # full: both configs
    .venv/bin/python -m benchmarks.bench_train --quick         # a smoke run (tiny config)
    .venv/bin/python -m benchmarks.bench_train --variants ours-default,hf-bf16 --repeats 3

Run it alone on the machine (the figures are ratios, but two cores shared with anything else
make them noisy): flock /tmp/gptpipe-bench.lock .venv/bin/python -m benchmarks.bench_train
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, cast

from benchmarks import peaks
from benchmarks.harness import Measured, alternate, machine, median, serve_worker, spawn_self

CONFIGS: dict[str, dict[str, Any]] = {
    "a": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 256, "vocab_size": 50257},
    "b": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "vocab_size": 50257},
    "quick": {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 64, "vocab_size": 2048},
}
# name -> settings of one measurement. `tune`: gptpipe.runtime.tune_allocator (what the CLI
# does for training commands); `fused`: the chunked head + loss (GPT.loss) instead of
# forward(idx, targets).
VARIANTS: dict[str, dict[str, Any]] = {
    "hf": {"impl": "hf", "dtype": "float32"},
    "hf-compiled": {"impl": "hf", "dtype": "float32", "compile": True},
    "hf-tuned": {"impl": "hf", "dtype": "float32", "tune": True},
    # transformers under the same bf16 autocast as ours (optimizer_step's, cfg.dtype)
    "hf-bf16": {"impl": "hf", "dtype": "bfloat16"},
    "hf-bf16-compiled": {"impl": "hf", "dtype": "bfloat16", "compile": True},
    "hf-bf16-tuned": {"impl": "hf", "dtype": "bfloat16", "tune": True},
    "ours-fp32-plain": {"impl": "ours", "dtype": "float32", "fused": False},
    "ours-fp32": {"impl": "ours", "dtype": "float32", "tune": True},
    "ours-bf16-plain": {"impl": "ours", "dtype": "bfloat16", "fused": False},
    "ours-bf16-untuned": {"impl": "ours", "dtype": "bfloat16"},
    "ours-default": {"impl": "ours", "dtype": "bfloat16", "tune": True},
    "ours-compiled": {"impl": "ours", "dtype": "bfloat16", "tune": True, "compile": True},
}
# float32's trio, then bf16's (left out where bf16 is not native); the others by --variants
DEFAULT_VARIANTS = "hf,hf-compiled,ours-fp32,hf-bf16,hf-bf16-compiled,ours-default"


# --------------------------------------------------------------------------- worker side


def build_ours(arch: dict[str, Any]) -> Any:
    from gptpipe.model.gpt import GPT, GPTConfig

    return GPT(GPTConfig(dropout=0.0, **arch))


def build_hf(arch: dict[str, Any]) -> Any:
    """transformers' GPT2LMHeadModel of our architecture `arch` (no dropout, SDPA attention),
    random weights: the reference every training and device benchmark builds."""
    from transformers import GPT2Config, GPT2LMHeadModel

    options: dict[str, Any] = {"attn_implementation": "sdpa"}  # a from_pretrained option
    config = GPT2Config(
        vocab_size=arch["vocab_size"],
        n_positions=arch["block_size"],
        n_embd=arch["n_embd"],
        n_layer=arch["n_layer"],
        n_head=arch["n_head"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=arch["vocab_size"] - 1,  # GPT-2's 50256 where that is the vocabulary's
        eos_token_id=arch["vocab_size"] - 1,
        **options,
    )
    return GPT2LMHeadModel(config)


def measure_step(spec: dict[str, Any]) -> dict[str, Any]:
    """Tokens/s of `spec['steps']` timed training steps after `spec['warmup']` untimed ones."""
    if spec.get("tune"):
        from gptpipe.runtime import tune_allocator

        tune_allocator()
    import torch
    from torch import nn

    from gptpipe.config import PretrainConfig
    from gptpipe.train.loop import optimizer_step
    from gptpipe.train.optim import make_optimizer, param_groups

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    arch = CONFIGS[spec["config"]]
    batch, block = spec["batch"], arch["block_size"]
    cfg = PretrainConfig(
        max_steps=10**6, batch_size=batch, warmup_steps=0, dtype=spec["dtype"], device="cpu"
    )
    data = torch.randint(0, arch["vocab_size"], (8, batch, block + 1))

    def batch_at(i: int) -> tuple[Any, Any]:
        seq = data[i % len(data)]
        return seq[:, :-1], seq[:, 1:]

    if spec["impl"] == "ours":
        model = build_ours(arch)
        n_params = model.num_params(non_embedding=True)
        optimizer = make_optimizer(model, cfg)
        if spec.get("fused", True):

            def loss_of(m: Any, b: Any) -> Any:
                return m(*b, with_logits=False)[1]
        else:

            def loss_of(m: Any, b: Any) -> Any:
                return m(*b)[1]
    else:
        model = build_hf(arch)
        n_params = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
        optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.learning_rate)

        def loss_of(m: Any, b: Any) -> Any:
            return m(input_ids=b[0], labels=b[0]).loss  # HF shifts the labels itself

    model.train()
    target = cast(nn.Module, torch.compile(model)) if spec.get("compile") else model
    # `optimizer_step` is the training loop's own step; for HF it runs the same code on HF's
    # model (autocast, backward, clipping, AdamW), so only the model and the loss differ.
    # Its bf16 autocast reaches HF's layers: Conv1D's addmm and the head's linear return
    # bf16 under it (checked by hand; HF upcasts the logits to float32 for its loss).
    for i in range(spec["warmup"]):
        optimizer_step(target, optimizer, cfg, cfg.learning_rate, i, batch_at, loss_of)
    times = []
    for i in range(spec["steps"]):
        t0 = time.perf_counter()
        optimizer_step(target, optimizer, cfg, cfg.learning_rate, i, batch_at, loss_of)
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    return {
        "tokens_per_s": batch * block / seconds,
        "step_s": seconds,
        "flops_per_token": peaks.flops_per_token(n_params, arch["n_layer"], arch["n_embd"], block),
        "n_params": n_params,
    }


def measure_peak(spec: dict[str, Any]) -> dict[str, Any]:
    """GFLOP/s of each product of `spec['shapes']` ((m, k, n) lists), or of one `spec['n']`
    square, in `spec['dtype']` on `spec['threads']` threads (`peaks.measure_products`);
    `gflops` is the best of them."""
    shapes = [tuple(s) for s in spec["shapes"]] if "shapes" in spec else [(spec["n"],) * 3]
    products = peaks.measure_products(
        cast(list[peaks.Shape], shapes),
        spec["dtype"],
        spec["threads"],
        spec["reps"],
        spec.get("budget_s", 4.0),
    )
    return {"gflops": max(products.values()), "products": products}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    return measure_peak(spec) if spec["kind"] == "peak" else measure_step(spec)


# --------------------------------------------------------------------------- driver side


def ours_default() -> str:
    """The variant `dtype: auto` picks on this machine: bf16 autocast only where the CPU
    computes bf16 natively (AVX-512 BF16 or AMX), else float32."""
    import torch

    from gptpipe.runtime import native_bf16

    return "ours-default" if native_bf16(torch.device("cpu")) else "ours-fp32"


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in a fresh interpreter (allocator settings are per process)."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MALLOC_")}
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", str(spec["threads"]))
    result: Measured = spawn_self("benchmarks.bench_train", spec, env=env)
    return result.data


def step_spec(config: str, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = {"kind": "step", "config": config, "batch": args.batch, "threads": args.threads}
    spec |= {"steps": args.steps, "warmup": args.warmup} | VARIANTS[variant]
    if spec.get("compile"):  # the first compiled steps include compilation
        spec["warmup"] = max(spec["warmup"], 3)
    return spec


def measure_peaks(
    configs: list[str], args: argparse.Namespace, native: bool
) -> dict[str, dict[str, Any]]:
    """The peak of each dtype (float32; bf16 where native) that MFU divides by: theoretical
    where it can be read, else the best product measured here (`benchmarks.peaks`)."""
    squares, reps = ((128, 256), 2) if args.quick else ((1024, 2048, 4096), 3)
    shapes = peaks.product_shapes([CONFIGS[c] for c in configs], args.batch, squares)
    found = {}
    for dtype in ("float32", "bfloat16") if native else ("float32",):
        spec = {"kind": "peak", "dtype": dtype, "threads": args.threads, "reps": reps}
        products = run_worker(spec | {"shapes": shapes})["products"]
        measured = peaks.measured(products, reps) | {"products": products}
        found[dtype] = peaks.choose(peaks.theoretical(dtype, args.threads), measured)
    return found


def variant_row(
    info: dict[str, Any], samples: list[float], base: float, variant: str, peak: dict[str, Any]
) -> dict[str, Any]:
    """One variant's figures; its MFU against the peak of its own dtype (None where that
    dtype has no peak here: bf16 on a CPU without native bf16)."""
    tps = median(samples)
    gflops = tps * info["flops_per_token"] / 1e9
    dtype = VARIANTS[variant]["dtype"]
    mfu, exceeds = peaks.mfu(gflops, peak["gflops"]) if peak else (None, False)
    return {
        "tokens_per_s": tps,
        "samples": samples,
        "ratio": tps / base,
        "gflops": gflops,
        "mfu": mfu,
        "mfu_dtype": dtype if peak else None,
        # True: this step ran faster than the "peak", which therefore bounds nothing
        "mfu_exceeds_peak": exceeds,
        "flops_per_token": info["flops_per_token"],
        "settings": VARIANTS[variant],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny config, 1 repeat, few steps")
    parser.add_argument("--configs", default="a,b", help="comma-separated: a, b")
    parser.add_argument(
        "--variants",
        default=None,
        help=f"comma-separated names (default: {DEFAULT_VARIANTS}, without the bf16 ones where "
        "the CPU lacks AVX-512 BF16 / AMX: emulated bf16 runs ~100x slower; with --quick: hf "
        f"and ours' default); of {', '.join(VARIANTS)}",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write all results here")
    argv = list(argv) if argv is not None else sys.argv[1:]
    if serve_worker(argv, measure):
        return {}
    args = parser.parse_args(argv)
    configs = ["quick"] if args.quick else args.configs.split(",")
    native = ours_default() == "ours-default"
    if args.variants is None and args.quick:
        args.variants = f"hf,{ours_default()}"  # a smoke run: one reference, our default
    if args.variants is None:
        args.variants = ",".join(
            v for v in DEFAULT_VARIANTS.split(",") if native or VARIANTS[v]["dtype"] != "bfloat16"
        )
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS] + [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown: {unknown}; variants: {list(VARIANTS)}")
    if args.quick:
        args.repeats, args.steps, args.warmup, args.batch = 1, 2, 1, 2

    found = measure_peaks(configs, args, native)
    print(machine())
    for dtype, peak in found.items():
        print(
            f"{dtype} peak on {args.threads} threads: {peak['gflops']:.0f} GFLOP/s ({peak['how']})"
        )

    results: dict[str, Any] = {"machine": machine(), "native_bf16": native, "peaks": found}
    results["threads"] = args.threads
    results["peaks_gflops"] = {dtype: peak["gflops"] for dtype, peak in found.items()}
    results["ours_variant"] = ours_default()
    results["configs"] = {}
    for config in configs:
        sides = {v: (lambda v=v, c=config: run_worker(step_spec(c, v, args))) for v in variants}
        runs = alternate(sides, args.repeats)
        samples = {v: [r["tokens_per_s"] for r in runs[v]] for v in variants}
        base = median(samples[variants[0]])
        print(f"\nconfig {config}: {CONFIGS[config]}, batch {args.batch}, {args.threads} threads")
        print(f"{'variant':20s} {'tokens/s':>10s} {'vs ' + variants[0]:>10s} {'MFU':>12s}  samples")
        rows = {}
        for variant in variants:
            peak = found.get(VARIANTS[variant]["dtype"], {})
            row = rows[variant] = variant_row(
                runs[variant][-1], samples[variant], base, variant, peak
            )
            short = {"float32": "fp32", "bfloat16": "bf16"}.get(row["mfu_dtype"], "")
            mfu = "n/a" if row["mfu"] is None else f"{row['mfu']:.1%} {short}"
            mfu += " (>peak!)" if row["mfu_exceeds_peak"] else ""
            print(
                f"{variant:20s} {row['tokens_per_s']:10.0f} {row['ratio']:9.2f}x {mfu:>12s}  "
                + " ".join(f"{s:.0f}" for s in samples[variant])
            )
        results["configs"][config] = rows
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
