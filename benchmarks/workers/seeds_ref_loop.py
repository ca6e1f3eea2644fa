"""bench_seeds part b's reference: a transformers GPT-2 trained under nanoGPT's loop and
settings (AdamW betas 0.9/0.95, weight decay 0.1 on matrices, clipping 1.0, nanoGPT's
warm-up and cosine schedule, random windows of the training ids, float32, no dropout).

    python -m benchmarks.workers.seeds_ref_loop CONFIG_JSON TRAIN_IDS OUT

CONFIG_JSON: {"iters", "warmup", "lr", "min_lr", "batch", "block", "n_layer", "n_head",
"n_embd"}; TRAIN_IDS: a .npy of GPT-2 ids; the model is saved to OUT (save_pretrained).
Prints {"train_loss"} (the last step's). The parent times the whole process.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np
import torch
import transformers


def lr_at(cfg: dict[str, Any], it: int) -> float:
    """nanoGPT's get_lr."""
    if it < cfg["warmup"]:
        return cfg["lr"] * (it + 1) / (cfg["warmup"] + 1)
    if it > cfg["iters"]:
        return cfg["min_lr"]
    ratio = (it - cfg["warmup"]) / (cfg["iters"] - cfg["warmup"])
    return cfg["min_lr"] + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg["lr"] - cfg["min_lr"])


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    cfg = json.loads(args[0])
    ids = np.load(args[1]).astype(np.int64)
    out = args[2]
    torch.manual_seed(1337)
    config = transformers.GPT2Config(
        vocab_size=50257,
        n_positions=cfg["block"],
        n_embd=cfg["n_embd"],
        n_layer=cfg["n_layer"],
        n_head=cfg["n_head"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = transformers.GPT2LMHeadModel(config)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=(0.9, 0.95))
    data = torch.from_numpy(ids)
    model.train()
    for it in range(cfg["iters"]):
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, it)
        ix = torch.randint(len(data) - cfg["block"], (cfg["batch"],))
        x = torch.stack([data[i : i + cfg["block"]] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + cfg["block"]] for i in ix])
        logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.save_pretrained(out)
    print(json.dumps({"train_loss": float(loss)}))


if __name__ == "__main__":
    main()
