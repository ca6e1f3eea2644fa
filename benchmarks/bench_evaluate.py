"""Evaluation speed: `gptpipe.evaluation.perplexity` against a plain batched forward pass
(`model(inputs)` -> full logits -> cross-entropy) over the same sliding windows.

The plain pass is what an evaluation loop would do without care; ours runs the head only
on the positions each window scores (with stride < context most positions are context
only, and they skip the last block's MLP too). Both run the same windows, batch size and
thread count, in inference mode, the sides alternating (ABBA, so that neither always runs
first), median of repeats; the two perplexities must agree. The GPT-2-vocabulary config reads
fewer tokens by default (its plain pass is slow), so that a whole run stays near a minute.

    .venv/bin/python benchmarks/bench_evaluate.py [--quick] [--json out.json]
    flock /tmp/gptpipe-bench.lock .venv/bin/python benchmarks/bench_evaluate.py
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

CONFIGS: dict[str, dict[str, int]] = {
    # the default pipeline's model, and a GPT-2-vocabulary one
    "default": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "vocab_size": 4096},
    "gpt2vocab": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "vocab_size": 50257},
    "quick": {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 64, "vocab_size": 2048},
}
TOKENS = {"default": 20_000, "gpt2vocab": 3_000, "quick": 2_000}  # per config, unless --tokens


def plain(model: Any, tokens: np.ndarray, stride: int, batch_size: int) -> tuple[float, float]:
    """(seconds, perplexity) of full-logits forward passes over the same windows."""
    from gptpipe.evaluation import windows

    stream = torch.from_numpy(tokens)
    ws = windows(tokens.size, model.config.block_size, stride)
    start = time.perf_counter()
    nll, count = 0.0, 0
    with torch.inference_mode():
        for s in range(0, len(ws), batch_size):
            batch = ws[s : s + batch_size]
            width = max(w.end - w.begin for w in batch) - 1
            inputs = torch.zeros(len(batch), width, dtype=torch.long)
            targets = torch.full((len(batch), width), -100, dtype=torch.long)
            for row, w in enumerate(batch):
                window = stream[w.begin : w.end]
                n = window.numel() - 1
                inputs[row, :n] = window[:-1]
                skip = w.first - (w.begin + 1)
                targets[row, skip:n] = window[1 + skip :]
            logits, _ = model(inputs)  # (B, T, V): every position through the head
            loss = F.cross_entropy(
                logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="sum"
            )
            nll += float(loss)
            count += int((targets != -100).sum())
    return time.perf_counter() - start, math.exp(nll / count)


def ours(model: Any, tokens: np.ndarray, stride: int, batch_size: int) -> tuple[float, float]:
    from gptpipe.evaluation import perplexity

    start = time.perf_counter()
    result = perplexity(model, tokens, stride, batch_size, description="bench")
    return time.perf_counter() - start, float(result["perplexity"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from gptpipe.model.gpt import GPT, GPTConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=0, help="0: the config's own count")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--stride", type=int, default=0, help="0: half of each context")
    parser.add_argument("--configs", default="default,gpt2vocab", help="comma-separated")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    names = ["quick"] if args.quick else args.configs.split(",")
    repeats = 1 if args.quick else args.repeats
    results: dict[str, Any] = {"threads": torch.get_num_threads(), "configs": {}}
    for name in names:
        arch = CONFIGS[name]
        n_tokens = args.tokens or TOKENS[name]
        torch.manual_seed(0)
        model = GPT(GPTConfig(**arch)).eval()  # type: ignore[arg-type]
        tokens = np.random.default_rng(0).integers(0, arch["vocab_size"], n_tokens)
        stride = args.stride or arch["block_size"] // 2
        ours(model, tokens[:500], stride, args.batch_size)  # warm-up
        plain(model, tokens[:500], stride, args.batch_size)
        ours_s, plain_s = [], []
        for r in range(repeats):
            for side in ("ours", "plain") if r % 2 == 0 else ("plain", "ours"):
                if side == "ours":
                    t, ppl_ours = ours(model, tokens, stride, args.batch_size)
                    ours_s.append(t)
                else:
                    t, ppl_plain = plain(model, tokens, stride, args.batch_size)
                    plain_s.append(t)
        row = {
            "arch": arch,
            "tokens": n_tokens,
            "stride": stride,
            "ours_tokens_per_s": n_tokens / statistics.median(ours_s),
            "plain_tokens_per_s": n_tokens / statistics.median(plain_s),
            "perplexity_ours": ppl_ours,
            "perplexity_plain": ppl_plain,
            "perplexity_agrees": math.isclose(ppl_ours, ppl_plain, rel_tol=1e-4),
            "repeats": repeats,
        }
        row["ratio"] = row["ours_tokens_per_s"] / row["plain_tokens_per_s"]  # type: ignore[operator]
        results["configs"][name] = row
        print(
            f"{name:<10} ours {row['ours_tokens_per_s']:>9.0f} tok/s  plain forward "
            f"{row['plain_tokens_per_s']:>9.0f} tok/s  ratio {row['ratio']:.2f}  perplexity "
            f"{ppl_ours:.3f} vs {ppl_plain:.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
