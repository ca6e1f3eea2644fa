"""Training speed: gptpipe's training step against transformers' GPT2LMHeadModel, same config.

Each measurement runs in its own subprocess (fresh allocator, fresh thread pool, no state
carried between variants), and the variants alternate within each repeat, so slow drift of the
machine hits all of them alike; the figure of a variant is the median over repeats. A step is
forward + backward + gradient clipping + AdamW on one batch of `batch x context` tokens, with
dropout 0 and the same thread count everywhere. Also measured in subprocesses: the fp32 and bf16
matmul peaks, for model FLOPs utilisation (MFU) with 6N + 12*L*d*T FLOPs per token (N without
the position embeddings, the tied head counted once).

    .venv/bin/python -m benchmarks.bench_train                 # full: both configs, 5 repeats
    .venv/bin/python -m benchmarks.bench_train --quick         # a smoke run (tiny config)
    .venv/bin/python -m benchmarks.bench_train --variants ours-default,hf --repeats 3

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
    "ours-fp32-plain": {"impl": "ours", "dtype": "float32", "fused": False},
    "ours-fp32": {"impl": "ours", "dtype": "float32", "tune": True},
    "ours-bf16-plain": {"impl": "ours", "dtype": "bfloat16", "fused": False},
    "ours-bf16-untuned": {"impl": "ours", "dtype": "bfloat16"},
    "ours-default": {"impl": "ours", "dtype": "bfloat16", "tune": True},
    "ours-compiled": {"impl": "ours", "dtype": "bfloat16", "tune": True, "compile": True},
}
DEFAULT_VARIANTS = "hf,hf-compiled,hf-tuned,ours-fp32-plain,ours-fp32,ours-bf16-plain,ours-default"


# --------------------------------------------------------------------------- worker side


def build_ours(arch: dict[str, Any]) -> Any:
    from gptpipe.model.gpt import GPT, GPTConfig

    return GPT(GPTConfig(dropout=0.0, **arch))


def build_hf(arch: dict[str, Any]) -> Any:
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
    for i in range(spec["warmup"]):
        optimizer_step(target, optimizer, cfg, cfg.learning_rate, i, batch_at, loss_of)
    times = []
    for i in range(spec["steps"]):
        t0 = time.perf_counter()
        optimizer_step(target, optimizer, cfg, cfg.learning_rate, i, batch_at, loss_of)
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    L, d, T = arch["n_layer"], arch["n_embd"], block
    flops_per_token = 6 * n_params + 12 * L * d * T
    return {
        "tokens_per_s": batch * block / seconds,
        "step_s": seconds,
        "flops_per_token": flops_per_token,
        "n_params": n_params,
    }


def measure_peak(spec: dict[str, Any]) -> dict[str, Any]:
    """Best GFLOP/s of a square matmul in `spec['dtype']` on `spec['threads']` threads."""
    import torch

    torch.set_num_threads(spec["threads"])
    n = spec["n"]
    dtype = getattr(torch, spec["dtype"])
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    best = float("inf")
    deadline = time.perf_counter() + spec.get("budget_s", 5.0)
    for _ in range(spec["reps"]):  # the best of `reps`, within a time budget (slow dtypes)
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return {"gflops": 2 * n**3 / best / 1e9}


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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny config, 1 repeat, few steps")
    parser.add_argument("--configs", default="a,b", help="comma-separated: a, b")
    parser.add_argument(
        "--variants",
        default=None,
        help=f"comma-separated names (default: {DEFAULT_VARIANTS}, without the bf16 ones where "
        "the CPU lacks AVX-512 BF16 / AMX: emulated bf16 runs ~100x slower)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write all results here")
    argv = list(argv) if argv is not None else sys.argv[1:]
    if serve_worker(argv, measure):
        return {}
    args = parser.parse_args(argv)
    configs = ["quick"] if args.quick else args.configs.split(",")
    if args.variants is None:
        native = ours_default() == "ours-default"
        args.variants = ",".join(
            v for v in DEFAULT_VARIANTS.split(",") if native or VARIANTS[v]["dtype"] != "bfloat16"
        )
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS] + [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown: {unknown}; variants: {list(VARIANTS)}")
    if args.quick:
        args.repeats, args.steps, args.warmup, args.batch = 1, 2, 1, 2
        variants = ["hf", ours_default()]  # a smoke run: one reference, our default

    peak_n, peak_reps = (256, 3) if args.quick else (2048, 10)
    peaks = {}
    for dtype in ("float32", "bfloat16"):
        # Without AVX-512 BF16 / AMX a bf16 matmul is emulated, ~100x slower: a smaller one
        # measures that rate as well, in seconds rather than many minutes.
        n = peak_n if dtype == "float32" or ours_default() == "ours-default" else 512
        spec = {"kind": "peak", "dtype": dtype, "threads": args.threads}
        peaks[dtype] = run_worker(spec | {"n": min(n, peak_n), "reps": peak_reps})["gflops"]
    print(machine())
    print(
        f"matmul peak on {args.threads} threads: fp32 {peaks['float32']:.0f} GFLOP/s, "
        f"bf16 {peaks['bfloat16']:.0f} GFLOP/s ({peaks['bfloat16'] / peaks['float32']:.1f}x)"
    )

    results: dict[str, Any] = {"machine": machine(), "peaks_gflops": peaks, "configs": {}}
    results["ours_variant"] = ours_default()
    for config in configs:
        sides = {v: (lambda v=v, c=config: run_worker(step_spec(c, v, args))) for v in variants}
        runs = alternate(sides, args.repeats)
        samples = {v: [r["tokens_per_s"] for r in runs[v]] for v in variants}
        info = {v: runs[v][-1] for v in variants}
        rows = {}
        base = median(samples[variants[0]])
        print(f"\nconfig {config}: {CONFIGS[config]}, batch {args.batch}, {args.threads} threads")
        print(
            f"{'variant':20s} {'tokens/s':>10s} {'vs ' + variants[0]:>10s} {'MFU fp32':>9s} "
            f"{'MFU bf16':>9s}  samples"
        )
        for variant in variants:
            tps = median(samples[variant])
            gflops = tps * info[variant]["flops_per_token"] / 1e9
            rows[variant] = {
                "tokens_per_s": tps,
                "samples": samples[variant],
                "ratio": tps / base,
                "mfu_fp32_peak": gflops / peaks["float32"],
                "mfu_bf16_peak": gflops / peaks["bfloat16"],
                "flops_per_token": info[variant]["flops_per_token"],
                "settings": VARIANTS[variant],
            }
            row = rows[variant]
            print(
                f"{variant:20s} {tps:10.0f} {tps / base:9.2f}x {row['mfu_fp32_peak']:8.1%} "
                f"{row['mfu_bf16_peak']:8.1%}  " + " ".join(f"{s:.0f}" for s in samples[variant])
            )
        results["configs"][config] = rows
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
