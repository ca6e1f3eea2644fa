"""bench_seeds' held-out scoring: the loss of a model on a token file, every token after the
first predicted once, by the same function for every side.

    python -m benchmarks.workers.seeds_score KIND MODEL TOKENS [NANOGPT]

KIND: `ours` (a gptpipe model folder), `nanogpt` (nanoGPT's ckpt.pt; NANOGPT, its checkout,
goes first on sys.path for its model.py) or `hf` (anything else: a transformers GPT-2
folder). TOKENS: a .npy of token ids. Prints {"loss" (nats per token), "tokens" (scored)}.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

Logits = Callable[[torch.Tensor], torch.Tensor]


def ours(model_path: str) -> tuple[torch.nn.Module, int, Logits]:
    from gptpipe.model.folder import load_model

    model, _ = load_model(model_path, torch.device("cpu"))

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        return model.lm_head(model.hidden_states(x))

    return model, model.config.block_size, logits_of


def nanogpt(model_path: str) -> tuple[torch.nn.Module, int, Logits]:
    nano = importlib.import_module("model")  # nanoGPT's model.py, first on sys.path

    ckpt = torch.load(model_path, map_location="cpu", weights_only=True)
    model = nano.GPT(nano.GPTConfig(**ckpt["model_args"]))
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    model.load_state_dict(state)

    def hidden(m: Any, x: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(x.shape[1])
        h = m.transformer.drop(m.transformer.wte(x) + m.transformer.wpe(pos))
        for blk in m.transformer.h:
            h = blk(h)
        return m.transformer.ln_f(h)

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        return model.lm_head(hidden(model, x))

    return model, model.config.block_size, logits_of


def transformers_gpt2(model_path: str) -> tuple[torch.nn.Module, int, Logits]:
    import transformers

    model = transformers.GPT2LMHeadModel.from_pretrained(model_path)

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        return model(x).logits

    return model, model.config.n_positions, logits_of


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 3:
        sys.path.insert(0, args[3])
    kind, model_path, tokens_path = args[:3]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ids = np.load(tokens_path).astype(np.int64)
    load = {"ours": ours, "nanogpt": nanogpt}.get(kind, transformers_gpt2)
    model, block, logits_of = load(model_path)
    model.eval()
    nll, n = 0.0, 0
    # consecutive windows of block+1 tokens overlapping by one: every token after the first is
    # predicted once, from the earlier tokens of its window
    with torch.no_grad():
        starts = list(range(0, len(ids) - 1, block))
        for i in range(0, len(starts), 16):
            rows = [ids[s : s + block + 1] for s in starts[i : i + 16]]
            for row in rows:
                x = torch.from_numpy(row[:-1])[None]
                y = torch.from_numpy(row[1:])
                logits = logits_of(x)[0].float()
                nll += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
                n += len(y)
    print(json.dumps({"loss": nll / n, "tokens": n}))


if __name__ == "__main__":
    main()
