"""Memory per process of training a GPT-2 model under each data-parallel strategy (what
`gptpipe info` shows): the same estimate as the stage's start-up check (`training_bytes`), its
parts split by what DDP replicates and FSDP shards.

Per process, for P parameters over N processes, each running micro-batches of `batch_size`
sequences of the model's whole context:

- ddp: float32 weights (4P), gradients (4P) and AdamW's two moments (8P), all replicated,
  plus DDP's gradient buckets (a second copy of the gradients, 4P) when N > 1;
- fsdp: the same three sharded (each rank holds ceil(P/N) of them), plus what is whole at a
  time: the root's weights (embeddings with the tied head, final norm: gathered for the whole
  step), two blocks' weights (the one computing and the one prefetched) and the root's and one
  block's whole gradients before their reduce-scatter;
- both: the activations kept for the backward pass and the logits, as `training_bytes`
  counts them (float32; bf16 autocast keeps about half).

Those are the device's. Under fsdp each rank also keeps the plain model in host memory while
its shards train (`gptpipe.train.distributed.shard`: the stage saves it once the trained
weights are put back), 4P more: `host`. On the CPU the device is the host, so a process there
needs `total + host`; on CUDA it is the host's RAM, per rank.

Gathered weights are counted in float32; with bf16 on CUDA (MixedPrecisionPolicy) they are
half that. One process (N = 1) trains alone under both strategies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from gptpipe.model.gpt import GPTConfig
from gptpipe.model.params import block_breakdown, config_breakdown

STRATEGIES = ("ddp", "fsdp")
F32 = 4  # bytes of a float32
ADAMW_STATES = 2  # exp_avg and exp_avg_sq, float32 each


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes one process needs to train, by part."""

    weights: int
    gradients: int
    optimizer: int  # AdamW's two moments
    buffers: int  # ddp: gradient buckets; fsdp: the weights and gradients whole at a time
    activations: int  # kept for the backward pass, and the logits
    host: int = 0  # fsdp: the plain model each rank keeps in host memory while it trains

    @property
    def total(self) -> int:
        """The device's bytes (on CUDA, one GPU's)."""
        return self.weights + self.gradients + self.optimizer + self.buffers + self.activations

    def on(self, device_type: str) -> int:
        """Bytes of `device_type`'s memory one process needs: `total`, and on the CPU
        (whose memory the host copy shares) `host` too."""
        return self.total + (self.host if device_type == "cpu" else 0)

    def to_dict(self) -> dict[str, int]:
        return asdict(self) | {"total": self.total}


def activation_bytes(config: GPTConfig, batch_size: int) -> int:
    """Activations of one micro-batch kept for the backward pass (about 2 * (34 C + 5 H T)
    bytes per token and layer, Korthikanti et al. 2022, in float32) and its logits (8 bytes a
    token and vocabulary entry): `gptpipe.config.training_bytes`'s count."""
    tokens = batch_size * config.block_size
    per_layer = 34 * config.n_embd + 5 * config.n_head * config.block_size
    return 2 * tokens * config.n_layer * per_layer + 8 * tokens * config.vocab_size


def unit_params(config: GPTConfig) -> tuple[int, int, int]:
    """(all parameters, the root's, one block's): FSDP's units are each block and the root
    (everything outside the blocks: embeddings with the tied head, final norm, a classifier's
    head)."""
    total = config_breakdown(config)["total"]
    block = sum(n for part, n in block_breakdown(config).items() if part.startswith("block 0 "))
    return total, total - config.n_layer * block, block


def training_memory(
    config: GPTConfig, batch_size: int, nproc: int, strategy: str
) -> TrainingMemory:
    """What one of `nproc` processes needs to train `config` at `batch_size` under
    `strategy` (ddp or fsdp)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be ddp or fsdp, not {strategy!r}")
    if nproc < 1 or batch_size < 1:
        raise ValueError(f"nproc and batch_size must be >= 1, not {nproc} and {batch_size}")
    total, root, block = unit_params(config)
    activations = activation_bytes(config, batch_size)
    if strategy == "ddp" or nproc == 1:
        buckets = F32 * total if nproc > 1 else 0
        return TrainingMemory(
            F32 * total, F32 * total, ADAMW_STATES * F32 * total, buckets, activations
        )
    shard = -(-total // nproc)  # ceil: FSDP pads each parameter to a multiple of nproc
    whole = F32 * (root + 2 * block) + F32 * (root + block)  # weights, then gradients
    return TrainingMemory(
        F32 * shard, F32 * shard, ADAMW_STATES * F32 * shard, whole, activations, F32 * total
    )
