"""The sample stage's continuations: a greedy one and seeded samples per prompt, with seeds that
do not depend on the other models and prompts.
"""

from __future__ import annotations

import zlib
from typing import Any

import tiktoken
import torch

from gptpipe.config import SampleConfig
from gptpipe.generate.decode import generate
from gptpipe.generate.text import prompt_ids
from gptpipe.model.gpt import GPT
from gptpipe.tokenizer.folder import eot_id


def sample_seed(seed: int, model: str, prompt_format: str, prompt: str) -> int:
    """A seed per (model, prompt format, prompt): stable across runs and independent of the
    other models and prompts, so adding a prompt does not change the others' samples."""
    key = zlib.crc32(f"{model}\n{prompt_format}\n{prompt}".encode())
    return (seed * 1_000_003 + key) % 2**63


def continuations(
    model: GPT,
    encoding: tiktoken.Encoding,
    cfg: SampleConfig,
    text: str,
    seed: int,
) -> list[dict[str, Any]]:
    """One greedy continuation of `text`, then `num_samples` sampled ones from one generator."""
    ids = prompt_ids(encoding, text)
    stop = eot_id(encoding)
    out = []
    new = generate(model, ids, cfg.max_new_tokens, temperature=0.0, stop_id=stop)
    out.append({"method": "greedy", "sample": 0, "temperature": 0.0, "top_k": 0, "ids": new})
    generator = torch.Generator(device="cpu").manual_seed(seed)
    for number in range(1, cfg.num_samples + 1):
        new = generate(
            model,
            ids,
            cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            stop_id=stop,
            generator=generator,
        )
        method = "greedy" if cfg.temperature == 0 else "sample"
        out.append(
            {
                "method": method,
                "sample": number,
                "temperature": cfg.temperature,
                "top_k": cfg.top_k,
                "ids": new,
            }
        )
    return out
