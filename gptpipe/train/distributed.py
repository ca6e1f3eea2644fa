"""Where training runs: the device, the ranks of a torchrun process group, collectives over
them, DistributedDataParallel/torch.compile wrapping, and relaunching under torchrun.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist
from torch import nn

from gptpipe.config import TrainingConfig
from gptpipe.runtime import resolve_device, resolve_dtype

# --------------------------------------------------------------------------- pieces


def training_device(cfg: TrainingConfig) -> torch.device:
    """The device named by `cfg.device`; asking for CUDA without one is bad input naming the
    section's `device` key."""
    return resolve_device(cfg.device, f"{cfg._section()}.device")


@dataclass(frozen=True)
class Placement:
    """Where and how one training run computes, resolved once per run: its device, its
    autocast dtype (`auto` already resolved: bfloat16, float16 or float32) and this process's
    rank in the process group (0 of 1 when alone)."""

    device: torch.device
    dtype: str
    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes curves and checkpoints and logs."""
        return self.rank == 0

    @classmethod
    def of(cls, cfg: TrainingConfig, device: torch.device) -> Placement:
        """The placement of a run of `cfg` on `device` in the current process group."""
        return cls(device, resolve_dtype(cfg.dtype, device), *world())


# --------------------------------------------------------------------------- the loop


def world() -> tuple[int, int]:
    """(rank, world size) of this process in an initialised process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_mean(value: float, place: Placement) -> float:
    """The mean of `value` over all ranks (the value itself when alone)."""
    if place.world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=place.device)
    dist.all_reduce(t)
    return float(t) / place.world_size


def any_rank(flag: bool, place: Placement) -> bool:
    """True on every rank when `flag` is true on any (a stop request reaches one process)."""
    if place.world_size == 1:
        return flag
    t = torch.tensor([int(flag)], device=place.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t)


def barrier(place: Placement) -> None:
    """Wait for every rank (nothing when alone)."""
    if place.world_size > 1:
        dist.barrier()


def prepare(model: nn.Module, cfg: TrainingConfig, place: Placement) -> nn.Module:
    """What the forward passes go through: the model, in DistributedDataParallel when this
    process is one of several, compiled when `cfg.compile`. Turns TF32 matmuls on for CUDA
    (float32 accuracy of training is unaffected; 3-8x the matmul speed on Ampere and later)."""
    device = place.device
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    net = model
    if place.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        net = cast(nn.Module, torch.compile(net))
    return net


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes outputs, logs and checkpoints."""
        return self.rank == 0


def launched_ranks() -> Ranks:
    """The ranks torchrun put in the environment (RANK, WORLD_SIZE, LOCAL_RANK)."""
    env = os.environ
    return Ranks(
        int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))
    )


def init_distributed(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the torchrun job if there is one (gloo on the CPU, nccl on CUDA, one GPU per local
    rank) and return the ranks and this process's device (`device`, from `training_device`,
    with its local rank's index on CUDA). Alone: (Ranks(), `device`)."""
    ranks = launched_ranks()
    if ranks.world_size == 1:
        return ranks, device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ranks, device


def close_distributed() -> None:
    """Leave the process group (after the last collective)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def torchrun_argv(nproc: int, argv: list[str]) -> list[str]:
    """This same command line, relaunched under torchrun with `nproc` processes on this
    machine (`--standalone`: a local rendezvous; see the README for several machines)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, f"--nproc_per_node={nproc}", "-m", "gptpipe", *argv]


def relaunch(nproc: int) -> int:
    """Run the current `gptpipe pretrain ...` under torchrun and return its exit status.

    Each process gets an even share of the cores (torchrun would otherwise give each one
    thread) unless OMP_NUM_THREADS is set. The checkpoint, Ctrl-C and exit-status behaviour
    is the same as one process: torchrun forwards SIGINT/SIGTERM to the ranks.
    """
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    proc = subprocess.Popen(torchrun_argv(nproc, sys.argv[1:]), env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the ranks got the signal too: let them save and exit
        return proc.wait()
