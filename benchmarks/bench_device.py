"""The GPU check's measurements: training and decoding at GPT-2 124M's shape on one device,
gptpipe against transformers in the same dtype (bf16), each within a time budget.

- training: tokens/s of one optimizer step (forward, backward, clipping, fused AdamW; the
  training loop's own `optimizer_step` for both models, so only the model and its loss
  differ) under bf16 autocast, eager and `torch.compile`d, ours (`prepare`, as training
  wraps it, TF32 on) against transformers' GPT2LMHeadModel (sdpa attention); and MFU: model
  FLOPs per token (6N + 12 L d T, N without the position embeddings, the tied head once) x
  tokens/s over the card's published dense bf16 peak (none for a card not in `PEAKS`, nor
  for a CPU);
- decoding: greedy tokens/s at batch 1 and 16 (a 64-token prompt, 128 new tokens, prefill
  included), ours (`for_decoding`, bf16 weights and cache) against `transformers.generate`
  with the same weights in bf16, and how many of ours tokens transformers' equal (bf16 may
  part at near-ties: recorded, not required);
- with `--junit FILE`: the outcome of the CUDA tests (`pytest -m cuda tests/cuda
  --junitxml FILE`, run by benchmarks/device_check.sh before this).

A variant that fails (out of memory, a compile error) is recorded with its error and the
others still run; one that the budget (`--budget-s`) has no time left for is recorded as not
run. The results are written after every variant (`--json`, and `--record` in the format
benchmarks/run_all.py stores as benchmarks/results/<name>.json), so that a run cut short
still leaves what it measured.

    python -m benchmarks.bench_device --device cuda --record /tmp/out/device.json
    python -m benchmarks.bench_device --quick --device cpu --json /tmp/r.json   # seconds
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import peaks
from benchmarks.bench_train import build_hf

GPT2_124M: dict[str, Any] = {
    "n_layer": 12,
    "n_head": 12,
    "n_embd": 768,
    "block_size": 1024,
    "vocab_size": 50257,
}
QUICK: dict[str, Any] = {
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 64,
    "block_size": 64,
    "vocab_size": 2048,
}
# Published dense (not 2:4 sparse) bf16 tensor-core peaks, TFLOP/s, by a substring of
# torch.cuda.get_device_name; the first match wins, so the more specific names come first.
PEAKS: tuple[tuple[str, float, str], ...] = (
    ("H100 PCIe", 756.0, "NVIDIA H100 PCIe"),
    ("H100 NVL", 835.0, "NVIDIA H100 NVL"),
    ("H200 NVL", 835.0, "NVIDIA H200 NVL"),
    ("H100", 989.0, "NVIDIA H100 SXM"),
    ("H200", 989.0, "NVIDIA H200 SXM"),
    ("A100", 312.0, "NVIDIA A100"),
)
TRAIN_VARIANTS = ("ours", "hf", "ours-compiled", "hf-compiled")  # eager first: they are quick
DECODE_BATCHES = (1, 16)
PROMPT_TOKENS, NEW_TOKENS = 64, 128


def published_peak(name: str) -> tuple[float | None, str]:
    """(dense bf16 peak in TFLOP/s, which card's published figure) for a device name; (None,
    why) for a card not listed, so that no MFU is made up."""
    for key, tflops, card in PEAKS:
        if key in name:
            return tflops, f"published dense bf16 peak of the {card}"
    return None, f"no published peak known for {name!r}: no MFU"


class Budget:
    """Seconds left of the run's budget, shared out among what is still to measure."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def share(self, parts: int) -> float:
        """A fair slice of what is left for the next of `parts` measurements."""
        return max(self.left(), 0.0) / max(parts, 1)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: Any) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def flops_per_token(arch: dict[str, Any]) -> int:
    """Model FLOPs of one trained token (`peaks.flops_per_token`: 6N + 12 L d T, N without
    the position embeddings)."""
    import torch

    from gptpipe.model.gpt import GPT, GPTConfig

    with torch.device("meta"):
        n_params = GPT(GPTConfig(**arch)).num_params(non_embedding=True)
    return peaks.flops_per_token(n_params, arch["n_layer"], arch["n_embd"], arch["block_size"])


# --------------------------------------------------------------------------- training


def train_variant(
    name: str, arch: dict[str, Any], batch: int, dtype: str, device: Any, seconds: float
) -> dict[str, Any]:
    """Tokens/s of the training step of variant `name` (ours / hf, -compiled or not): warm-up
    steps (compilation included, timed apart), then timed steps until `seconds` are spent
    (at least 2), the median step."""
    import torch
    from torch import nn

    from gptpipe.config import PretrainConfig
    from gptpipe.model.gpt import GPT, GPTConfig
    from gptpipe.train.distributed import Placement, prepare
    from gptpipe.train.loop import optimizer_step
    from gptpipe.train.losses import lm_loss
    from gptpipe.train.optim import make_optimizer

    compiled = name.endswith("-compiled")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # this variant's peak alone
    settings: dict[str, Any] = {"batch_size": batch, "dtype": dtype, "compile": compiled}
    cfg = PretrainConfig(max_steps=10**6, warmup_steps=0, **settings)
    torch.manual_seed(0)
    data = torch.randint(0, arch["vocab_size"], (4, batch, arch["block_size"] + 1))

    def batch_at(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        seq = data[i % len(data)]
        return seq[:, :-1], seq[:, 1:]

    model: nn.Module
    loss_of: Callable[[nn.Module, Any], torch.Tensor]
    if name.startswith("ours"):
        model = GPT(GPTConfig(dropout=0.0, **arch)).to(device)
        net = prepare(model, cfg, Placement(device, dtype))  # TF32 on CUDA; compile
        loss_of = lm_loss
    else:
        model = build_hf(arch).to(device)
        net = model if not compiled else torch.compile(model)  # type: ignore[assignment]

        def loss_of(m: nn.Module, b: Any) -> torch.Tensor:
            return m(input_ids=b[0], labels=b[0]).loss  # transformers shifts the labels

    model.train()
    optimizer = make_optimizer(model, cfg)  # fused AdamW for both

    def step(i: int) -> float:
        start = time.perf_counter()
        optimizer_step(model, optimizer, cfg, 3e-4, i, batch_at, loss_of, net=net)
        _sync(device)  # (optimizer_step synchronises CUDA itself; the CPU needs none)
        return time.perf_counter() - start

    started = time.perf_counter()
    warm = [step(i) for i in range(3 if compiled else 2)]
    warmup_s = time.perf_counter() - started
    deadline = time.perf_counter() + max(seconds - warmup_s, 0.0)
    times = [step(100 + i) for i in range(2)]
    while time.perf_counter() < deadline and len(times) < 50:
        times.append(step(100 + len(times)))
    step_s = statistics.median(times)
    result = {
        "tokens_per_s": batch * arch["block_size"] / step_s,
        "step_s": step_s,
        "steps": len(times),
        "warmup_s": warmup_s,
        "first_step_s": warm[0],
    }
    if device.type == "cuda":
        result["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return result


# --------------------------------------------------------------------------- decoding


def decode_models(arch: dict[str, Any], dtype: str, device: Any, quick: bool) -> tuple[Any, Any]:
    """A random transformers GPT-2 and ours with the same weights, both in `dtype` on
    `device`, ours as `gptpipe generate` decodes (`for_decoding`)."""
    import torch

    from gptpipe.generate.decode import for_decoding
    from gptpipe.interop.gpt2_formats import config_from_shapes, hf_to_ours
    from gptpipe.model.folder import model_from_tensors
    from gptpipe.model.tensors import LazyTensor

    torch.manual_seed(0)
    hf = build_hf(arch).eval()
    state = hf_to_ours(hf.state_dict())
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    config = config_from_shapes(shapes, n_head=arch["n_head"], where=Path("hf"))
    lazy = {k: LazyTensor(tuple(v.shape), lambda v=v: v.clone()) for k, v in state.items()}  # type: ignore[misc]
    ours = model_from_tensors(config, lazy).eval().to(device)
    # --quick: the plain layout (the CPU's layout timing is not what a smoke run is for)
    ours = for_decoding(ours, dtype, layout="plain" if quick else "fastest")
    hf = hf.to(device=device, dtype=getattr(torch, dtype))
    return ours, hf


def decode_batch(
    ours: Any, hf: Any, batch: int, lengths: tuple[int, int], device: Any, seconds: float
) -> dict[str, Any]:
    """Greedy tokens/s at `batch` rows, each side alternately until `seconds` are spent (at
    least 2 timed runs each, after one warm-up), the median run; `lengths`: (prompt tokens,
    new tokens)."""
    import torch

    from gptpipe.generate.decode import Decoding, generate_ids

    vocab = ours.config.vocab_size
    prompt_tokens, new_tokens = lengths
    g = torch.Generator().manual_seed(batch)
    prompts = torch.randint(0, vocab, (batch, prompt_tokens), generator=g)
    decoding = Decoding(max_new_tokens=new_tokens, temperature=0.0)
    rows = prompts.tolist()
    ids = prompts.to(device)

    def run_ours() -> list[list[int]]:
        return generate_ids(ours, rows, decoding)

    def run_hf() -> list[list[int]]:
        with torch.inference_mode():
            out = hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=0,
            )
        return out[:, prompt_tokens:].tolist()

    sides = {"ours": run_ours, "hf": run_hf}
    tokens: dict[str, list[list[int]]] = {}
    for name, side in sides.items():
        tokens[name] = side()  # warm-up (CUDA kernels, cuBLAS handles, the CPU's layouts)
    times: dict[str, list[float]] = {name: [] for name in sides}
    deadline = time.perf_counter() + seconds
    while min(len(t) for t in times.values()) < 2 or (
        time.perf_counter() < deadline and len(times["ours"]) < 10
    ):
        for name, side in sides.items():
            _sync(device)
            start = time.perf_counter()
            side()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    pairs = [
        (a, b)
        for ra, rb in zip(tokens["ours"], tokens["hf"], strict=True)
        for a, b in zip(ra, rb, strict=True)
    ]
    result: dict[str, Any] = {
        "agreement": sum(a == b for a, b in pairs) / max(len(pairs), 1),
        "runs": len(times["ours"]),
    }
    for name, taken in times.items():
        seconds_per_run = statistics.median(taken)
        result[name] = {
            "tokens_per_s": batch * new_tokens / seconds_per_run,
            "seconds": seconds_per_run,
        }
    result["ratio"] = result["ours"]["tokens_per_s"] / result["hf"]["tokens_per_s"]
    return result


# --------------------------------------------------------------------------- the run


def junit_counts(path: Path) -> dict[str, Any]:
    """Passed / failed / errors / skipped of a pytest --junitxml file, and the failed tests'
    names."""
    root = ET.parse(path).getroot()
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failed = []
    for case in root.iter("testcase"):
        kinds = {child.tag for child in case}
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if "failure" in kinds:
            counts["failed"] += 1
            failed.append(name)
        elif "error" in kinds:
            counts["errors"] += 1
            failed.append(name)
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts | {"not_passed": failed[:20]}


def device_facts(device: Any) -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"device": device.type, "torch": torch.__version__}
    facts["cuda"] = torch.version.cuda
    try:
        from importlib import metadata

        facts["transformers"] = metadata.version("transformers")
    except Exception:  # not installed: the hf variants record their own error
        facts["transformers"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts["device_name"] = props.name
        facts["capability"] = f"{props.major}.{props.minor}"
        facts["memory_gb"] = props.total_memory / 1e9
        peak, source = published_peak(props.name)
    else:
        from benchmarks.harness import machine

        facts["device_name"] = machine()
        peak, source = None, "no published peak for a CPU here: no MFU (see bench_train)"
    return facts | {"peak_bf16_tflops": peak, "peak_source": source}


def _guarded(call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`call()`, or {"error": ...} when it raises: one failed variant must not end the run."""
    try:
        return call()
    except Exception as error:  # out of memory, a compile failure, a missing package
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA if present), cuda, cuda:N or cpu"
    )
    parser.add_argument("--quick", action="store_true", help="tiny shapes, seconds (a smoke run)")
    parser.add_argument("--batch", type=int, default=8, help="training batch (x 1,024 tokens)")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--budget-s", type=float, default=240.0, help="seconds for everything")
    parser.add_argument("--junit", type=Path, help="pytest --junitxml file of the CUDA tests")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--record", type=Path, help="write a run_all-style record here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    import torch

    from gptpipe.errors import BadInput
    from gptpipe.runtime import resolve_device

    try:
        device = resolve_device(args.device, "--device")
    except BadInput as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as training's prepare: both sides
        torch.backends.cudnn.allow_tf32 = True
    arch = QUICK if args.quick else GPT2_124M
    batch = 2 if args.quick else args.batch
    lengths = (16, 8) if args.quick else (PROMPT_TOKENS, NEW_TOKENS)
    budget = Budget(args.budget_s)
    facts = device_facts(device)
    variants = TRAIN_VARIANTS[:2] if args.quick else TRAIN_VARIANTS  # no inductor build
    results: dict[str, Any] = facts | {
        "quick": args.quick,
        "train": {
            "arch": arch,
            "batch": batch,
            "dtype": args.dtype,
            "flops_per_token": flops_per_token(arch),
            "variants": {},
        },
        "decode": {
            "arch": arch,
            "dtype": args.dtype,
            "prompt_tokens": lengths[0],
            "new_tokens": lengths[1],
            "batches": {},
        },
    }
    if args.junit is not None:
        results["cuda_tests"] = (
            junit_counts(args.junit) if args.junit.is_file() else {"error": "no junit file"}
        )

    def save() -> None:
        text = json.dumps(results, indent=2) + "\n"
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text, encoding="utf-8")
        if args.record is not None:
            write_record(args.record, results, argv, time.perf_counter() - started)

    # decoding first (minutes of compilation come last), then training, eager before compiled
    share = 0.25 * budget.left() / len(DECODE_BATCHES) / 2  # half of it for the warm-ups
    try:
        ours, hf = decode_models(arch, args.dtype, device, args.quick)
    except Exception as error:  # transformers missing, out of memory
        results["decode"]["error"] = f"{type(error).__name__}: {str(error)[:300]}"
    else:
        for rows in DECODE_BATCHES:
            results["decode"]["batches"][str(rows)] = _guarded(
                functools.partial(decode_batch, ours, hf, rows, lengths, device, share)
            )
            save()
        del ours, hf
    _free(device)
    peak = facts["peak_bf16_tflops"]
    per_token = results["train"]["flops_per_token"]
    for k, name in enumerate(variants):
        compiled = name.endswith("-compiled")
        if compiled and budget.left() <= 0:  # the eager baselines always run (a few steps)
            results["train"]["variants"][name] = {"error": "not run: the time budget was spent"}
            continue
        # compiled variants spend most of their share compiling: they get two shares each
        weight = 2 if compiled else 1
        rest = sum(2 if v.endswith("-compiled") else 1 for v in variants[k:])
        seconds = max(budget.left(), 0.0) * weight / rest * 0.5
        row = _guarded(
            functools.partial(train_variant, name, arch, batch, args.dtype, device, seconds)
        )
        _free(device)
        if "tokens_per_s" in row:
            row["mfu"] = row["tokens_per_s"] * per_token / (peak * 1e12) if peak else None
        results["train"]["variants"][name] = row
        save()
    results["seconds"] = time.perf_counter() - started
    save()
    print(json.dumps(results, indent=2))
    return results


@functools.cache
def environment() -> dict[str, Any]:
    """The machine and software, as benchmarks/run_all.py records them (collected once)."""
    from importlib import metadata

    from benchmarks.harness import REPO
    from gptpipe.report.environment import collect_environment

    found = collect_environment(REPO)
    for name in ("transformers", "tokenizers"):  # the references' versions, as run_all's
        try:
            found["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found["packages"][name] = None
    return found


def write_record(
    path: Path, results: dict[str, Any], argv: list[str] | None, seconds: float
) -> None:
    """The results as benchmarks/run_all.py stores a benchmark's (benchmarks/results/<name>
    .json): the date, the command, the wall time, the machine and software, the results."""
    shown = " ".join(
        ["python", "-m", "benchmarks.bench_device", *(sys.argv[1:] if argv is None else argv)]
    )
    record = {
        "benchmark": "device",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shown,
        "seconds": seconds,
        "environment": environment(),
        "results": results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
