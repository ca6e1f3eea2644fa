"""The sample stage's continuations: for each decoding setting of `sample.decoding`, one
continuation (deterministic settings) or seeded samples per prompt, with seeds that do not
depend on the other models, prompts and settings.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import tiktoken
import torch

from gptpipe.config import DecodingConfig, SampleConfig
from gptpipe.errors import ConfigError
from gptpipe.generate.decode import Decoding, require_decoding_fits
from gptpipe.generate.text import context_ids, continuations
from gptpipe.model.gpt import GPT, GPTConfig


def sample_seed(seed: int, model: str, prompt_format: str, prompt: str, setting: str = "") -> int:
    """A seed per (model, prompt format, prompt, decoding setting): stable across runs and
    independent of the others, so adding a prompt does not change the others' samples."""
    key = zlib.crc32(f"{model}\n{prompt_format}\n{prompt}\n{setting}".encode())
    return (seed * 1_000_003 + key) % 2**63


def resolve(cfg: SampleConfig, entry: DecodingConfig) -> tuple[Decoding, int]:
    """The decoding of one `sample.decoding` entry, its unset keys taken from the section,
    and how many continuations it draws per prompt (one when it is deterministic)."""
    decoding = Decoding(
        max_new_tokens=cfg.max_new_tokens if entry.max_new_tokens is None else entry.max_new_tokens,
        temperature=cfg.temperature if entry.temperature is None else entry.temperature,
        top_k=cfg.top_k if entry.top_k is None else entry.top_k,
        top_p=entry.top_p,
        repetition_penalty=entry.repetition_penalty,
        num_beams=entry.num_beams,
        length_penalty=entry.length_penalty,
        stop=tuple(entry.stop),
        slide=entry.slide,
    )
    if deterministic(decoding):
        return decoding, 1
    return decoding, cfg.num_samples if entry.num_samples is None else entry.num_samples


def key_of(index: int, entry: DecodingConfig) -> Callable[[str], str]:
    """How params.yaml names a setting of `sample.decoding[index]`: its own key, or the
    section's num_samples where the entry leaves it unset."""

    def name(setting: str) -> str:
        if setting == "num_samples" and entry.num_samples is None:
            return "sample.num_samples"
        return f"sample.decoding[{index}].{setting}"

    return name


def require_samples_fit(cfg: SampleConfig, model: GPT | GPTConfig, prompt_tokens: int = 1) -> None:
    """Refuse (ConfigError naming the key) a setting of `sample.decoding` whose continuations
    of one prompt, decoded together, cannot fit in memory (`require_decoding_fits`): with a
    model folder's config before loading it (any prompt), then with the model and each
    prompt's `prompt_tokens` before decoding it."""
    for index, entry in enumerate(cfg.decoding):
        decoding, count = resolve(cfg, entry)
        if count:
            name = key_of(index, entry)
            require_decoding_fits(name, model, decoding, count, prompt_tokens, ConfigError)


def deterministic(decoding: Decoding) -> bool:
    return decoding.temperature == 0 or decoding.num_beams > 1


def method(decoding: Decoding) -> str:
    if decoding.num_beams > 1:
        return "beam"
    return "greedy" if decoding.temperature == 0 else "sample"


def prompt_continuations(
    model: GPT,
    encoding: tiktoken.Encoding,
    cfg: SampleConfig,
    text: str,
    seed_of: Any,
) -> list[dict[str, Any]]:
    """Every setting's continuations of `text`: records without model, prompt and format.
    `seed_of(setting name)` gives the seed of a sampled setting."""
    ids = context_ids(model, encoding, text)
    require_samples_fit(cfg, model, len(ids))
    out: list[dict[str, Any]] = []
    for entry in cfg.decoding:
        decoding, count = resolve(cfg, entry)
        if count == 0:
            continue
        seed = None if deterministic(decoding) else int(seed_of(entry.name))
        generator = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
        (found,) = continuations(model, encoding, [ids], decoding, generator, count)
        for number, item in enumerate(found, start=0 if seed is None else 1):
            out.append(
                {
                    "decoding": entry.name,
                    "method": method(decoding),
                    "sample": number,
                    "temperature": decoding.temperature,
                    "top_k": decoding.top_k,
                    "top_p": decoding.top_p,
                    "repetition_penalty": decoding.repetition_penalty,
                    "num_beams": decoding.num_beams,
                    "length_penalty": decoding.length_penalty,
                    "max_new_tokens": decoding.max_new_tokens,
                    "seed": seed,
                    "tokens": item.tokens,
                    "text": item.text,
                }
            )
    return out
