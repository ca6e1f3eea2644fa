"""bench_seeds part e: seed003's training step alone, ours against nanoGPT's, in one process on
the same batches, and the step's floor here (its Linear layers' matrix products alone).

    python -m benchmarks.workers.seeds_step CONFIG_JSON

CONFIG_JSON: {"repo", "nanogpt" (a checkout: its model.py), "params" (the preset's model and
pretrain sections), "vocab", "batches", "products" ({batch: [[m, k, n], ...]}), "warmup",
"rounds", "steps"}. Prints {batch: {"ours_ms", "nanogpt_ms", "floor_ms", "floor_dtype"}}:
milliseconds per step, medians over rounds that alternate which side goes first.
"""

from __future__ import annotations

import collections
import importlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from gptpipe.config import TrainingConfig, build_section, to_dict
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.runtime import median_seconds, resolve_dtype
from gptpipe.train.loop import optimizer_step
from gptpipe.train.losses import lm_loss
from gptpipe.train.optim import make_optimizer


def per_call_ms(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1000


def product_seconds(a: torch.Tensor, b: torch.Tensor, warmup: int, calls: int) -> float:
    """The median seconds of one `a @ b`."""
    return median_seconds(lambda: a @ b, warmup, calls)


def floor(products: Sequence[Sequence[int]], dtype: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The step's Linear products alone, each shape timed on its own (median of its calls) and
    counted as often as the step has it: the time no step of this shape can beat here."""
    total = 0.0
    for (m, k, n), count in collections.Counter(map(tuple, products)).items():
        a = torch.randn(m, k, dtype=getattr(torch, dtype))
        b = torch.randn(k, n, dtype=a.dtype)
        calls = 2 * cfg["steps"] * cfg["rounds"]
        total += count * product_seconds(a, b, cfg["warmup"], calls) * 1000
    return {"floor_ms": total, "floor_dtype": dtype}


def step_ours(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    train_cfg: TrainingConfig,
    x: torch.Tensor,
    y: torch.Tensor,
) -> Callable[[], None]:
    """One optimizer step of ours, as the pipeline's training loop takes it."""

    def step() -> None:
        optimizer_step(model, opt, train_cfg, 1e-3, 0, lambda i: (x, y), lm_loss)

    return step


def step_nanogpt(
    model: Any, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> Callable[[], None]:
    """nanoGPT train.py's step on the CPU (its scaler is a no-op in fp32)."""

    def step() -> None:
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def alternate_rounds(sides: dict[str, Callable[[], None]], cfg: dict[str, Any]) -> dict[str, Any]:
    """Each side warmed up, then `rounds` rounds of `steps` steps a side, the side that goes
    first alternating: the median milliseconds per step of each."""
    for fn in sides.values():
        per_call_ms(fn, cfg["warmup"])
    times: dict[str, list[float]] = {name: [] for name in sides}
    for round_ in range(cfg["rounds"]):
        order = list(sides) if round_ % 2 == 0 else list(sides)[::-1]
        for name in order:
            times[name].append(per_call_ms(sides[name], cfg["steps"]))
    return {f"{k}_ms": statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    cfg = json.loads(args[0])
    sys.path[:0] = [cfg["repo"], cfg["nanogpt"]]
    nano = importlib.import_module("model")  # nanoGPT's model.py
    params, vocab = cfg["params"], cfg["vocab"]
    train_cfg: TrainingConfig = build_section(params, "pretrain")
    shape = to_dict(build_section(params, "model"))
    torch.manual_seed(1337)
    ours = GPT(GPTConfig(vocab_size=vocab, **shape))
    ours_opt = make_optimizer(ours, train_cfg)
    keys = ("block_size", "n_layer", "n_head", "n_embd", "dropout")
    theirs = nano.GPT(nano.GPTConfig(vocab_size=vocab, bias=False, **{k: shape[k] for k in keys}))
    theirs_opt = theirs.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")
    dtype = resolve_dtype(train_cfg.dtype, torch.device("cpu"))  # what the run's autocast uses
    results = {}
    for batch in cfg["batches"]:
        x = torch.randint(vocab, (batch, shape["block_size"]))
        y = torch.randint(vocab, (batch, shape["block_size"]))
        sides = {
            "ours": step_ours(ours, ours_opt, train_cfg, x, y),
            "nanogpt": step_nanogpt(theirs, theirs_opt, x, y),
        }
        results[str(batch)] = alternate_rounds(sides, cfg)
        results[str(batch)] |= floor(cfg["products"][str(batch)], dtype, cfg)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
