"""Decoding speed: gptpipe's KV-cache decoder against `transformers.generate` with its cache.

Batch 1, greedy, a 16-token prompt, 256 new tokens, the same random weights (a
GPT2LMHeadModel converted through gptpipe.interop), the same thread count; the two sides
alternate within each repeat and each figure is the median over repeats. Both sides must
produce the same tokens (checked). Where the CPU computes bf16 natively (where ours decodes
with bf16 weights), transformers runs a second time with its weights in bf16
(`model.to(torch.bfloat16)`), alternating with the others: the pair in the same dtype
(`hf_bf16_*`; its tokens may differ from float32's at near-ties, recorded, not required).
Also measured, in the same run:

- time to first token (prompt prefill + one token), the median of short runs that
  alternate the sides (5 per repeat);
- time per token at position ~64 and at position ~1000 (a prompt of that length, then the
  median of single-token steps), whose ratio shows how the cost grows with the context; our
  two positions are timed step by step in alternation (two caches, one step each in turn),
  so that a machine whose speed drifts over seconds slows both alike;
- memory-bandwidth utilisation: bytes read per token (every weight once, the head tied to
  the embeddings counted once, plus the keys and values cached so far, each side in its own
  dtypes: `bytes_per_token` ours, `hf_bytes_per_token` transformers float32,
  `hf_bf16_bytes_per_token` bf16) x tokens/s, against
  the machine's bandwidth measured by a large tensor copy (read + write bytes / s) before
  each of our timed runs, the median of those probes (a shared host's bandwidth drifts).
  Where the weights fit in the CPU's last-level cache (its size is recorded) they stop
  coming from memory after the first token, and the figure can pass 100%;
- what the decode-time weight layouts are worth: our decoder with each Linear in the layout
  timed fastest here for its shape (`gptpipe.generate.layouts`: plain, oneDNN-packed or read
  by gptpipe's C++ kernel; what `gptpipe generate` runs, and which one each shape got)
  against the same model in the plain layout, alternating with the other two sides;
- whether the CPU computes bf16 natively (`gptpipe.runtime.native_bf16`): decoding uses
  bf16 weights only there (recorded per config), so on a CPU without AVX-512 BF16 / AMX the
  run is float32 (gptpipe's kernel widening bf16 weights as it loads them read GPT-2 124M's
  MLP matrices only ~10% faster than float32 on a 2-core AVX2 EPYC: bound by the widening,
  not the memory); and
  the key/value cache it decodes on (`cache_plan`: its dtype, and whether one new query
  reads it through gptpipe's C++ kernel or torch's attention, whichever times faster here),
  with the times of every plan's attention over the far end of the context (all layers).

    .venv/bin/python benchmarks/bench_generate.py            # configs a and b, 3 repeats
    .venv/bin/python benchmarks/bench_generate.py --quick    # a smoke run (tiny config)
    flock /tmp/gptpipe-bench.lock .venv/bin/python benchmarks/bench_generate.py --json out.json

`main(argv) -> dict` returns the results (also printed as a table, and written with --json).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

CONFIGS: dict[str, dict[str, int]] = {
    "a": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 1024, "vocab_size": 50257},
    "b": {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024, "vocab_size": 50257},
    "quick": {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 256, "vocab_size": 2048},
}
PROMPT_LEN = 16
NEW_TOKENS = 256
FIRST_TOKEN_SAMPLES = 5  # time-to-first-token runs per side and repeat, alternating


def build(arch: dict[str, int], seed: int = 0, layout: str = "fastest") -> tuple[Any, Any]:
    """A random transformers GPT-2 and the same weights as our model, its Linears in
    `layout` (`gptpipe.generate.layouts`: the fastest here per shape, or one for all)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from gptpipe.generate.decode import for_decoding
    from gptpipe.interop.gpt2_formats import config_from_shapes, hf_to_ours
    from gptpipe.model.folder import model_from_tensors
    from gptpipe.model.tensors import LazyTensor

    torch.manual_seed(seed)
    config = GPT2Config(  # type: ignore[call-arg]
        vocab_size=arch["vocab_size"],
        n_positions=arch["block_size"],
        n_embd=arch["n_embd"],
        n_layer=arch["n_layer"],
        n_head=arch["n_head"],
        attn_implementation="sdpa",
    )
    hf = GPT2LMHeadModel(config).eval()
    state = hf_to_ours(hf.state_dict())
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    ours_config = config_from_shapes(shapes, n_head=arch["n_head"], where=Path("hf"))
    lazy = {k: LazyTensor(tuple(v.shape), lambda v=v: v.clone()) for k, v in state.items()}  # type: ignore[misc]
    # as `gptpipe generate` decodes: bfloat16 where the CPU computes it natively, and
    # each Linear in its fastest layout (the plain one too, to show what layouts are worth)
    ours = for_decoding(model_from_tensors(ours_config, lazy).eval(), layout=layout)
    return hf, ours


def ours_run(model: Any, prompt: list[int], n: int) -> tuple[float, float, list[int]]:
    """(seconds for all n tokens, seconds to the first, tokens)."""
    from gptpipe.generate.decode import Decoding, decode_steps

    start = time.perf_counter()
    first = 0.0
    out: list[int] = []
    for step, ids in enumerate(decode_steps(model, [prompt], Decoding(max_new_tokens=n))):
        out.append(int(ids[0]))
        if step == 0:
            first = time.perf_counter() - start
    return time.perf_counter() - start, first, out


def hf_run(hf: Any, prompt: list[int], n: int) -> tuple[float, list[int]]:
    ids = torch.tensor([prompt])
    start = time.perf_counter()
    with torch.no_grad():
        out = hf.generate(
            ids,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
        )
    return time.perf_counter() - start, out[0, len(prompt) :].tolist()


def ours_step_times(model: Any, positions: tuple[int, ...], steps: int) -> list[float]:
    """Median seconds of one greedy decoding step once each of `positions` tokens are in the
    cache: a cache per position, prefilled, then one step on each in turn, `steps` rounds
    (each step as the decoding loop takes it: `next_logits`, then the greedy choice)."""
    from gptpipe.generate.decode import cache_plan, next_logits
    from gptpipe.generate.fused_step import FusedStep

    plan, fused, vocab = cache_plan(model), FusedStep.of(model), model.config.vocab_size
    caches, tokens = [], []
    with torch.inference_mode():
        for position in positions:
            cache = plan.new_cache(model, 1, position + steps)
            prompt = torch.tensor([[(7 * i) % vocab for i in range(position)]])
            tokens.append(next_logits(model, prompt, cache).argmax(-1, keepdim=True))
            caches.append(cache)
        times: list[list[float]] = [[] for _ in positions]
        for _ in range(steps):
            for i, cache in enumerate(caches):
                start = time.perf_counter()
                tokens[i] = next_logits(model, tokens[i], cache, fused).argmax(-1, keepdim=True)
                times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def hf_step_time(hf: Any, position: int, steps: int) -> float:
    """The same for transformers: (time of position+steps) - (time of 1 token) over steps."""
    prompt = [(7 * i) % hf.config.vocab_size for i in range(position)]
    one = hf_run(hf, prompt, 1)[0]
    many = hf_run(hf, prompt, steps + 1)[0]
    return (many - one) / steps


def bandwidth_gbs(mib: int = 256, repeats: int = 5) -> float:
    """Bytes read + written per second by a large float32 copy (the memory's bandwidth)."""
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / min(times) / 1e9


def bytes_per_token(hf: Any, element_size: int, position: float, cache_size: int) -> float:
    """Weights read once per token (position embeddings: one row) + the cache read, counted
    on the transformers model (the same weights; ours laid out are no parameters any more);
    `element_size` and `cache_size` are the bytes of one weight and of one cached value."""
    cfg = hf.config
    weights = sum(p.numel() for p in hf.parameters()) - cfg.n_positions * cfg.n_embd
    weights += cfg.n_embd
    cache = 2 * cfg.n_layer * position * cfg.n_embd
    return weights * element_size + cache * cache_size


def bench_config(
    name: str, arch: dict[str, int], repeats: int, quick: bool, hf_bf16: bool = False
) -> dict[str, Any]:
    """One config's figures; `hf_bf16`: also transformers with its weights in bf16.

    The copy bandwidth that utilisation divides by is probed before each of our timed runs
    and its median taken (`bandwidth_gb_per_s`): a shared host's bandwidth drifts within
    minutes (one 2-core KVM guest read 43.6 and 79.0 GB/s ten minutes apart), so one probe
    at start says little about the minute a decode was timed in."""
    hf, ours = build(arch)
    _, plain = build(arch, layout="plain")
    hf16 = copy.deepcopy(hf).to(torch.bfloat16) if hf_bf16 else None
    prompt = [(31 * i + 11) % arch["vocab_size"] for i in range(PROMPT_LEN)]
    n = 32 if quick else NEW_TOKENS
    for model in (ours, plain):  # warm up every side (thread pools, allocator, first calls)
        ours_run(model, prompt, 4)
    for reference in (hf, hf16) if hf16 is not None else (hf,):
        hf_run(reference, prompt, 4)
    ours_times, plain_times, ours_first, hf_times, hf_first = [], [], [], [], []
    hf16_times: list[float] = []
    probes: list[float] = []
    same = same_layouts = same16 = True
    for _ in range(repeats):  # alternate the sides
        probes.append(bandwidth_gbs(64 if quick else 256, repeats=3))
        total, _, ours_tokens = ours_run(ours, prompt, n)
        ours_times.append(total)
        seconds, hf_tokens = hf_run(hf, prompt, n)
        hf_times.append(seconds)
        if hf16 is not None:
            seconds, hf16_tokens = hf_run(hf16, prompt, n)
            hf16_times.append(seconds)
            same16 = same16 and ours_tokens == hf16_tokens
        total, _, plain_tokens = ours_run(plain, prompt, n)
        plain_times.append(total)
        same = same and ours_tokens == hf_tokens  # bf16 against fp32 may break a near-tie
        same_layouts = same_layouts and ours_tokens == plain_tokens
        for _ in range(FIRST_TOKEN_SAMPLES):  # short, alternating: robust to a busy machine
            ours_first.append(ours_run(ours, prompt, 1)[1])
            hf_first.append(hf_run(hf, prompt, 1)[0])
    near, far = (16, 48) if quick else (64, 1000)
    steps = 8 if quick else 16
    ours_near, hf_near, ours_far, hf_far = [], [], [], []
    for _ in range(max(1, repeats - 1) if not quick else 1):
        near_s, far_s = ours_step_times(ours, (near, far), steps)
        ours_near.append(near_s)
        ours_far.append(far_s)
        hf_near.append(hf_step_time(hf, near, steps))
        hf_far.append(hf_step_time(hf, far, steps))
    del plain  # its weights: not to be held through the rest
    ours_tps = n / statistics.median(ours_times)
    hf_tps = n / statistics.median(hf_times)
    plain_tps = n / statistics.median(plain_times)
    mean_position = PROMPT_LEN + n / 2
    from gptpipe.generate.decode import cache_plan, plan_seconds
    from gptpipe.generate.fused_step import FusedStep
    from gptpipe.generate.layouts import layout_seconds

    plan, cfg = cache_plan(ours), ours.config
    shape = (cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size)
    timed = plan_seconds(*shape, ours.wte.weight.dtype)
    dtype = ours.wte.weight.dtype
    linears = {f"{m.in_features}x{m.out_features}" for m in ours.modules() if _is_linear(m)}
    shapes = sorted(linears, key=lambda s: [int(n) for n in s.split("x")])
    moved = bytes_per_token(hf, ours.wte.weight.element_size(), mean_position, plan.dtype.itemsize)
    hf_moved = bytes_per_token(hf, 4, mean_position, 4)  # float32 weights, float32 cache
    pair: dict[str, Any] = {}
    if hf16 is not None:  # bf16 weights, and so a bf16 cache
        hf16_tps = n / statistics.median(hf16_times)
        hf16_moved = bytes_per_token(hf, 2, mean_position, 2)
        pair = {
            "hf_bf16_tokens_per_s": hf16_tps,
            "ratio_bf16": ours_tps / hf16_tps,
            "hf_bf16_same_tokens": same16,
            "hf_bf16_bytes_per_token": hf16_moved,
            "hf_bf16_gb_per_s": hf16_moved * hf16_tps / 1e9,
        }
    return {
        "arch": arch,
        "weights_dtype": str(dtype).removeprefix("torch."),
        "cache_dtype": str(plan.dtype).removeprefix("torch."),
        "cache_reader": "kernel" if plan.kernel else "torch",
        # one new token per row through gptpipe.generate.fused_step (else the modules)
        "fused_step": FusedStep.of(ours) is not None,
        # one query per layer over the far end of the context, each plan (decode.plan_seconds)
        "far_attention_s": {
            f"{str(p.dtype).removeprefix('torch.')} {'kernel' if p.kernel else 'torch'}": t
            for p, t in timed.items()
        },
        "new_tokens": n,
        "same_tokens": same,
        "layout_same_as_plain": same_layouts,
        # per Linear shape (in x out): each layout's seconds for one row (layouts.py), and the
        # layout it got
        "layout_seconds": {
            s: layout_seconds(*(int(n) for n in s.split("x")), dtype) for s in shapes
        },
        "layouts": {
            s: type(m).__name__
            for m in ours.modules()
            if _is_linear(m)
            for s in [f"{m.in_features}x{m.out_features}"]
        },
        "ours_tokens_per_s": ours_tps,
        "hf_tokens_per_s": hf_tps,
        "ratio": ours_tps / hf_tps,
        "ours_plain_layout_tokens_per_s": plain_tps,
        "layout_over_plain": ours_tps / plain_tps,
        "ours_first_token_s": statistics.median(ours_first),
        "hf_first_token_s": statistics.median(hf_first),
        "ours_step_s": {
            str(near): statistics.median(ours_near),
            str(far): statistics.median(ours_far),
        },
        "hf_step_s": {str(near): statistics.median(hf_near), str(far): statistics.median(hf_far)},
        "ours_far_over_near": statistics.median(ours_far) / statistics.median(ours_near),
        "hf_far_over_near": statistics.median(hf_far) / statistics.median(hf_near),
        "bytes_per_token": moved,
        "hf_bytes_per_token": hf_moved,
        "bandwidth_gb_per_s": statistics.median(probes),
        "bandwidth_probes_gb_per_s": probes,
        "ours_gb_per_s": moved * ours_tps / 1e9,
        "hf_gb_per_s": hf_moved * hf_tps / 1e9,
        **pair,
    }


def _is_linear(module: Any) -> bool:
    """A Linear of our decoding model, in whichever layout (they all have in_features)."""
    return hasattr(module, "in_features") and hasattr(module, "out_features")


def compiled_step(arch: dict[str, int], n: int) -> dict[str, float]:
    """Does `torch.compile` of the one-token decode step pay? Greedy on our model and cache:
    the step as `gptpipe generate` runs it (eager, each Linear in its fastest layout, the
    fused step where it applies, its own cache plan) against the model's step compiled with
    dynamic shapes (the cache grows by one position per token) on the plain layout and torch's
    attention (oneDNN's packed tensors and the C++ kernels are opaque to the compiler, which
    lays weights out its own way): first-call seconds and tokens/s after it."""
    from gptpipe.generate.decode import CachePlan, cache_plan, next_logits
    from gptpipe.generate.fused_step import FusedStep

    _, laid = build(arch)
    _, plain = build(arch, layout="plain")
    prompt = torch.tensor([[(31 * i + 11) % arch["vocab_size"] for i in range(PROMPT_LEN)]])
    fused = FusedStep.of(laid)

    def eager_step(cache: Any, ids: torch.Tensor) -> torch.Tensor:
        return next_logits(laid, ids, cache, fused)

    def plain_step(cache: Any, ids: torch.Tensor) -> torch.Tensor:
        return plain.lm_head(plain.hidden_states(ids, cache, last=1)[:, -1])

    compiled = torch.compile(plain_step, dynamic=True)
    plans = {id(eager_step): cache_plan(laid), id(compiled): CachePlan(cache_plan(laid).dtype)}

    @torch.inference_mode()
    def decode(fn: Any) -> tuple[float, float]:
        cache = plans[id(fn)].new_cache(laid, 1, PROMPT_LEN + n)
        ids = fn(cache, prompt).argmax(-1, keepdim=True)
        stamps = [time.perf_counter()]
        for _ in range(n - 1):
            ids = fn(cache, ids).argmax(-1, keepdim=True)
            stamps.append(time.perf_counter())
        return stamps[1] - stamps[0], (len(stamps) - 2) / (stamps[-1] - stamps[1])

    started = time.perf_counter()
    decode(compiled)  # compiles (the prefill shape, then the one-token shape)
    first = time.perf_counter() - started
    eager = [decode(eager_step)[1] for _ in range(2)]
    after = [decode(compiled)[1] for _ in range(2)]
    return {
        "compile_first_step_s": first,
        "eager_tokens_per_s": statistics.median(eager),
        "compiled_tokens_per_s": statistics.median(after),
        "compiled_over_eager": statistics.median(after) / statistics.median(eager),
    }


def machine() -> dict[str, Any]:
    from gptpipe.generate.kernels import loaded
    from gptpipe.runtime import native_bf16

    model_name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    native = native_bf16(torch.device("cpu"))
    return {
        "cpu": model_name,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "native_bf16": native,
        "kernels": "built" if loaded()[0] is not None else loaded()[1],
        "last_level_cache_mb": last_level_cache_mb(),
    }


def last_level_cache_mb() -> float | None:
    """The size of the CPU's largest cache (sysfs), in MB; None where sysfs does not say."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip()
        units = {"K": 1e-3, "M": 1.0, "G": 1e3}
        if text[:-1].isdigit() and text[-1] in units:
            sizes.append(int(text[:-1]) * units[text[-1]])
    return max(sizes, default=None)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny config, one repeat")
    parser.add_argument("--configs", default="a,b", help="comma-separated: a, b")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--compile", action="store_true", help="also: torch.compile of the decode step (a)"
    )
    parser.add_argument(
        "--hf-bf16",
        choices=("auto", "yes", "no"),
        default="auto",
        help="also transformers with bf16 weights (auto: where the CPU has native bf16)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = ["quick"] if args.quick else args.configs.split(",")
    results: dict[str, Any] = {"machine": machine(), "configs": {}}
    results["machine"]["bandwidth_gb_per_s"] = bandwidth_gbs(64 if args.quick else 256)
    # transformers in bf16 only where bf16 is native: elsewhere ours decodes in float32 and
    # an emulated bf16 reference would take many minutes to say nothing
    hf_bf16 = results["machine"]["native_bf16"] if args.hf_bf16 == "auto" else args.hf_bf16 == "yes"
    for name in names:
        repeats = 1 if args.quick else args.repeats
        row = bench_config(name, CONFIGS[name], repeats, args.quick, hf_bf16)
        bandwidth = row["bandwidth_gb_per_s"]  # probed beside this config's runs
        for side in ("ours", "hf", "hf_bf16"):
            if f"{side}_gb_per_s" in row:
                row[f"{side}_bandwidth_utilisation"] = row[f"{side}_gb_per_s"] / bandwidth
        results["configs"][name] = row
        print(json.dumps({name: row}), flush=True)  # each config as soon as it is measured
    if args.compile:
        arch = CONFIGS["quick" if args.quick else "a"]
        results["compile"] = compiled_step(arch, 32 if args.quick else NEW_TOKENS)
        print(json.dumps({"compile": results["compile"]}), flush=True)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['threads']} threads, torch {m['torch']}; native bf16: "
        f"{m['native_bf16']}; copy bandwidth "
        f"{m['bandwidth_gb_per_s']:.1f} GB/s",
        "config  tok/s ours  tok/s hf  ratio  first token ours/hf (ms)  step far/near ours  hf"
        "   GB/s ours (util)  layout/plain  same  weights",
    ]
    for name, r in results["configs"].items():
        lines.append(
            f"{name:<7} {r['ours_tokens_per_s']:>9.1f} {r['hf_tokens_per_s']:>9.1f} "
            f"{r['ratio']:>6.2f}  {1e3 * r['ours_first_token_s']:>8.1f} / "
            f"{1e3 * r['hf_first_token_s']:<8.1f}       {r['ours_far_over_near']:>5.2f}  "
            f"{r['hf_far_over_near']:>5.2f}   {r['ours_gb_per_s']:>5.2f} "
            f"({100 * r['ours_bandwidth_utilisation']:.0f}%)  {r['layout_over_plain']:>6.2f}"
            f"  {r['same_tokens']}  {r['weights_dtype']}"
        )
        if "bandwidth_probes_gb_per_s" in r:
            probes = ", ".join(f"{g:.1f}" for g in r["bandwidth_probes_gb_per_s"])
            lines.append(f"        copy bandwidth beside the runs: {probes} GB/s (median)")
        if "hf_bf16_tokens_per_s" in r:
            lines.append(
                f"        transformers with bf16 weights: {r['hf_bf16_tokens_per_s']:.1f} tok/s, "
                f"ours {r['ratio_bf16']:.2f}x, its bandwidth "
                f"{100 * r['hf_bf16_bandwidth_utilisation']:.0f}%, same tokens "
                f"{r['hf_bf16_same_tokens']}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
