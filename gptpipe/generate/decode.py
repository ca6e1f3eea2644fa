"""Autoregressive generation: greedy, temperature and top-k sampling."""

from __future__ import annotations

import torch

from gptpipe.model.gpt import GPT


@torch.no_grad()
def generate(
    model: GPT,
    prompt: list[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    stop_id: int | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Continue `prompt` by up to `max_new_tokens` ids; returns only the new ids.

    temperature 0 is greedy (argmax); otherwise logits are divided by the temperature and,
    with top_k > 0, all but the k most likely tokens are dropped before sampling.
    Generation stops after `stop_id` (not included in the result). The context is cropped
    to the model's block_size from the left.
    """
    if not prompt:
        raise ValueError("prompt must hold at least one token")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    idx = torch.tensor([prompt], dtype=torch.long, device=device)  # (1, T)
    block_size = model.config.block_size
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -block_size:])
        logits = logits[0, -1].float()  # (V,)
        if temperature == 0:
            next_id = int(torch.argmax(logits))
        else:
            logits = logits / temperature
            if 0 < top_k < logits.numel():
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            gen_device = generator.device if generator is not None else device
            next_id = int(torch.multinomial(probs.to(gen_device), 1, generator=generator))
        if stop_id is not None and next_id == stop_id:
            break
        new.append(next_id)
        idx = torch.cat([idx, torch.tensor([[next_id]], device=device)], dim=1)
    model.train(was_training)
    return new
