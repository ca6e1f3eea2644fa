"""The checkpoint round trip under fsdp (run by tests/train/test_fsdp.py under torchrun with 2
gloo ranks: `torchrun --nproc_per_node 2 tests/train/fsdp_checkpoint_worker.py DIR`).

A sharded run saved after 2 steps and resumed into a fresh sharded model steps on exactly as
the run that never stopped; a checkpoint saved by one plain process (DDP's format: a single
process trains the whole batch) resumes sharded to the same weights within float rounding.
Each rank prints "rank N ok" at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from gptpipe.config import PretrainConfig
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.train.distributed import Placement, shard, whole_state
from gptpipe.train.loop import optimizer_step
from gptpipe.train.losses import lm_loss
from gptpipe.train.optim import lr_at, make_optimizer
from gptpipe.train.state import TrainState, load_checkpoint, save_checkpoint

dist.init_process_group("gloo")
root = Path(sys.argv[1])
cfg = PretrainConfig(max_steps=4, batch_size=2, warmup_steps=0, strategy="fsdp", dtype="float32")
sharded = Placement.of(cfg, torch.device("cpu"))
alone = Placement(torch.device("cpu"), "float32")
config = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)


def rank_batch(i: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 * i + rank)
    x = torch.randint(0, 64, (2, 16), generator=g)
    return x, torch.roll(x, -1, 1)


def whole_batch(i: int) -> tuple[torch.Tensor, ...]:
    parts = [rank_batch(i, r) for r in range(2)]
    return tuple(torch.cat(t) for t in zip(*parts, strict=True))


def build(place: Placement) -> tuple[Any, Any]:
    torch.manual_seed(0)
    model = shard(GPT(config), place)
    return model, make_optimizer(model, cfg)


def step(model: Any, optimizer: Any, s: int, place: Placement) -> None:
    batch_at = whole_batch if place is alone else (lambda i: rank_batch(i, sharded.rank))
    optimizer_step(model, optimizer, cfg, lr_at(s, cfg), s, batch_at, lm_loss, place=place)


a, opt_a = build(sharded)
for s in range(2):
    step(a, opt_a, s, sharded)
save_checkpoint(root / "fsdp", TrainState(step=2), a, opt_a, "key", write=sharded.main)
plain, opt_plain = build(alone)
for s in range(2):
    step(plain, opt_plain, s, alone)
if sharded.main:  # DDP's rank 0 alone writes the whole state
    save_checkpoint(root / "plain", TrainState(step=2), plain, opt_plain, "key")
dist.barrier()
saved = load_file(str(root / "fsdp" / "state.safetensors"))
assert saved["model.wte.weight"].shape == (64, 32) and "model.lm_head.weight" not in saved
assert saved["optim.0.exp_avg"].shape == (64, 32)  # whole moments, indexed as DDP's
assert saved.keys() == load_file(str(root / "plain" / "state.safetensors")).keys()

b, opt_b = build(sharded)
c, opt_c = build(sharded)
assert load_checkpoint(root / "fsdp", b, opt_b, "key", cfg.max_steps).step == 2
assert load_checkpoint(root / "plain", c, opt_c, "key", cfg.max_steps).step == 2
for s in range(2, 4):
    for model, optimizer in ((a, opt_a), (b, opt_b), (c, opt_c)):
        step(model, optimizer, s, sharded)
wa, wb, wc = whole_state(a), whole_state(b), whole_state(c)
for name in wa:
    assert torch.equal(wa[name], wb[name]), name
    torch.testing.assert_close(wa[name], wc[name], rtol=1e-4, atol=1e-5, msg=name)
print(f"rank {sharded.rank} ok")
dist.destroy_process_group()
