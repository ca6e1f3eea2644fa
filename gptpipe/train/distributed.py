"""Where training runs: the device, the ranks of a torchrun process group, collectives over
them, DistributedDataParallel or fully sharded data parallel (FSDP2) and torch.compile
wrapping, and relaunching under torchrun.

The two strategies train the same trajectory (within float rounding). DDP keeps a whole copy
of the weights, gradients and AdamW states on every rank and all-reduces the gradients; FSDP
(`fully_shard` on each transformer block, then the root) keeps 1/world_size of each on every
rank, gathers a block's weights just before it computes and reduce-scatters its gradients
after, so a model whose training state does not fit one device trains on several.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gptpipe.config import TrainingConfig
from gptpipe.model.gpt import Block
from gptpipe.model.tensors import without_tied
from gptpipe.runtime import resolve_device, resolve_dtype

# --------------------------------------------------------------------------- pieces


def training_device(cfg: TrainingConfig) -> torch.device:
    """The device named by `cfg.device`; asking for CUDA without one is bad input naming the
    section's `device` key."""
    return resolve_device(cfg.device, f"{cfg._section()}.device")


@dataclass(frozen=True)
class Placement:
    """Where and how one training run computes, resolved once per run: its device, its
    autocast dtype (`auto` already resolved: bfloat16, float16 or float32), this process's
    rank in the process group (0 of 1 when alone) and the data-parallel strategy (ddp or
    fsdp: the training section's `strategy`)."""

    device: torch.device
    dtype: str
    rank: int = 0
    world_size: int = 1
    strategy: str = "ddp"

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes curves and checkpoints and logs."""
        return self.rank == 0

    @property
    def fsdp(self) -> bool:
        """The parameters, gradients and AdamW states are sharded over the ranks (FSDP in a
        group of several; one process alone has nothing to shard across and trains as is)."""
        return self.strategy == "fsdp" and self.world_size > 1

    @classmethod
    def of(cls, cfg: TrainingConfig, device: torch.device) -> Placement:
        """The placement of a run of `cfg` on `device` in the current process group."""
        rank, size = world()
        return cls(device, resolve_dtype(cfg.dtype, device), rank, size, cfg.strategy)


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
    process is one of several under ddp (under fsdp `model` is already `shard`'s), compiled
    when `cfg.compile`. Turns TF32 matmuls on for CUDA (float32 accuracy of training is
    unaffected; 3-8x the matmul speed on Ampere and later)."""
    device = place.device
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    net = model
    if place.world_size > 1 and not place.fsdp:
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        net = cast(nn.Module, torch.compile(net))
    return net


def through_forward(net: nn.Module, method: str, *args: Any) -> Any:
    """`method(*args)` of the model that `net` wraps (`prepare`'s), called through `net`'s
    forward when DistributedDataParallel is among the wrappers: DDP synchronises the gradients
    of a forward pass only, and has no other method. A classifier's `classify` trains so. A
    plain, compiled or FSDP-sharded model (`shard` registered the method) is called as is."""
    inner, ddp = net, False
    while isinstance(inner, DistributedDataParallel) or hasattr(inner, "_orig_mod"):
        if isinstance(inner, DistributedDataParallel):
            ddp, inner = True, inner.module
        else:  # torch.compile's OptimizedModule
            inner = cast(nn.Module, inner._orig_mod)
    if not ddp:
        return getattr(net, method)(*args)
    inner.forward = getattr(inner, method)  # an instance attribute hides the class's forward
    try:
        return net(*args)
    finally:
        del inner.forward


def accumulating(net: nn.Module, place: Placement, last: bool) -> AbstractContextManager[Any]:
    """The context of one micro-batch's backward pass: DDP all-reduces the gradients on the
    last micro-batch of a step only (no_sync before); FSDP reduce-scatters each micro-batch's
    into the sharded gradients (no whole gradient is ever held: the memory it exists to save)."""
    if last or place.world_size == 1 or place.fsdp:
        return contextlib.nullcontext()
    return cast(DistributedDataParallel, net).no_sync()


# --------------------------------------------------------------------------- FSDP

FORWARD_METHODS = ("classify",)  # GPT's methods besides forward that training calls


def shard(model: nn.Module, place: Placement) -> nn.Module:
    """What trains: `model` itself, or under fsdp a fully sharded copy of it.

    FSDP2 turns a module's parameters into DTensor shards in place, for good; the copy keeps
    `model` a plain module (the stage saves it as usual once `unshard_into` has put the
    trained weights back). Meanwhile `model` waits in host memory, so the device holds only
    the shards. Each transformer block is one FSDP unit (gathered just before it computes,
    freed after), the root the other (embeddings, with the tied head, and the final norm: a
    shared parameter belongs to the root's unit, so the tie holds). On CUDA with bf16 or fp16
    autocast the gathered weights are in that dtype and the gradients reduce in float32
    (MixedPrecisionPolicy); on the CPU nothing changes but the sharding (the run's autocast
    as under DDP). Every rank built the same model from the same seed, so no broadcast.
    A model's other methods that compute (`FORWARD_METHODS`: a classifier's `classify`) gather
    and free the weights as its forward does."""
    if not place.fsdp:
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import (
        MixedPrecisionPolicy,
        fully_shard,
        register_fsdp_forward_method,
    )

    mesh = init_device_mesh(place.device.type, (place.world_size,))
    policy = MixedPrecisionPolicy()
    if place.device.type == "cuda" and place.dtype in ("bfloat16", "float16"):
        policy = MixedPrecisionPolicy(
            param_dtype=getattr(torch, place.dtype), reduce_dtype=torch.float32
        )
    model.to("cpu")
    sharded = copy.deepcopy(model)
    for module in sharded.modules():
        if isinstance(module, Block):
            fully_shard(module, mesh=mesh, mp_policy=policy)
    fully_shard(sharded, mesh=mesh, mp_policy=policy)  # moves the shards to the device
    for method in FORWARD_METHODS:
        register_fsdp_forward_method(sharded, method)
    return sharded


def is_sharded(model: nn.Module) -> bool:
    """The model's parameters are FSDP's DTensor shards."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor shard (an all-gather: every rank calls it, in the same
    order), or `tensor` itself."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's shard of `full`, placed as the DTensor `like` (no communication: every rank
    holds `full`); `full` on `like`'s device when `like` is a plain tensor."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    full = full.to(like.device)
    if not isinstance(like, DTensor):
        return full
    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a DTensor (a view: writing it writes the shard), or `tensor`."""
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def whole_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's whole state on the host, the tied head left out, gathered one tensor at a
    time (a collective under FSDP: every rank calls it and gets all of it)."""
    return {name: whole(t.detach()).cpu() for name, t in without_tied(model.state_dict()).items()}


def unshard_into(model: nn.Module, trained: nn.Module, place: Placement) -> nn.Module:
    """`model` (plain, back on `place.device`) with `trained`'s weights: nothing to do unless
    `trained` is `shard`'s copy (then every rank gathers them: a collective)."""
    if trained is model:
        return model
    model.load_state_dict(whole_state(trained), strict=False)
    return model.to(place.device)


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


@contextlib.contextmanager
def process_group(cfg: TrainingConfig) -> Iterator[tuple[Ranks, torch.device]]:
    """A training stage's run, in the torchrun job if there is one: (ranks, this process's
    device); the group is left when the run ends, however it ends. Asking for CUDA without
    one is bad input naming the section's `device` key, before joining anything."""
    ranks, device = init_distributed(training_device(cfg))
    try:
        yield ranks, device
    finally:
        close_distributed()


def torchrun_argv(nproc: int, argv: list[str]) -> list[str]:
    """This same command line, relaunched under torchrun with `nproc` processes on this
    machine (`--standalone`: a local rendezvous; see the README for several machines)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, f"--nproc_per_node={nproc}", "-m", "gptpipe", *argv]


def relaunched(cfg: TrainingConfig) -> bool:
    """Whether `cfg.nproc` (> 1) processes under torchrun ran the current training command in
    this one's stead (see `relaunch`); False when this process is to train: nproc 1, or
    already one of torchrun's ranks. A rank's failure exits with its status (the ranks said
    why on stderr); an interrupted job raises KeyboardInterrupt (exit 130)."""
    if cfg.nproc == 1 or launched_ranks().world_size > 1:
        return False
    status = relaunch(cfg.nproc)
    if status == 130 or status < 0:
        raise KeyboardInterrupt
    if status != 0:
        raise SystemExit(status)
    return True


def relaunch(nproc: int) -> int:
    """Run the current `gptpipe pretrain ...` (or `finetune ...`) under torchrun and return
    its exit status.

    Each process gets an even share of the cores (torchrun would otherwise give each one
    thread) unless OMP_NUM_THREADS is set. The checkpoint, Ctrl-C and exit-status behaviour
    is the same as one process: torchrun forwards SIGINT/SIGTERM to the ranks, and a SIGTERM
    sent to this process alone (`dvc exp` stopping a job, a process manager) is passed on to
    torchrun rather than leaving it and the ranks behind (the job then answers 130, as one
    process stopped so does, not torchrun's 1).
    """
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    proc = subprocess.Popen(torchrun_argv(nproc, sys.argv[1:]), env=env)

    passed: list[int] = []

    def pass_on(signum: int, frame: object) -> None:
        passed.append(signum)
        proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, pass_on)
    try:
        status = proc.wait()
    except KeyboardInterrupt:  # the ranks got the signal too: let them save and exit
        status = proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 130 if passed else status
