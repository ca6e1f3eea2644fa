"""A GPT-2 decoder in plain PyTorch, readable top to bottom against the GPT-2 paper.

Parameter names follow OpenAI's GPT-2 checkpoints (`wte`, `wpe`, `h.N.ln_1`,
`h.N.attn.c_attn`, `h.N.attn.c_proj`, `h.N.ln_2`, `h.N.mlp.c_fc`, `h.N.mlp.c_proj`, `ln_f`),
so loading OpenAI's weights is a key map plus a transpose of the Conv1D matrices.
This module imports nothing else from the project and does no I/O.

Shape letters: B batch, T sequence length, C embedding width (n_embd), H heads,
D head width (C // H), V vocabulary size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gptpipe.model.fused_loss import linear_cross_entropy

GELUS = ("tanh", "exact")


@dataclass
class GPTConfig:
    """The architecture; saved in every checkpoint's config.json."""

    vocab_size: int = 50257
    block_size: int = 1024  # maximum context length (GPT-2's n_positions)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # GPT-2 has biases in every Linear and LayerNorm
    n_classes: int = 0  # > 0: a classification head replaces the language-model head
    gelu: str = "tanh"  # GPT-2's tanh approximation, or "exact" (erf, as torch's nn.GELU)

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.gelu not in GELUS:
            raise ValueError(f"gelu must be one of {', '.join(GELUS)}, not {self.gelu!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class KVCache:
    """Keys and values of every layer, preallocated for `max_len` positions, so that decoding
    one more token costs one position's work and allocates nothing.

    k, v: (n_layer, B, H, max_len, D). `pos` positions are filled, the same count in every
    row. `pad` (B,) is each row's left padding (prompts of different lengths in one batch):
    row b's tokens start at position pad[b], count their positions from there, and no query
    attends to its padding. A cache belongs to one sequence batch: `reset()` reuses it.

    `attend`, if given, is how one new query per row reads the cache when nothing is masked
    (q (B, H, 1, D), k and v (B, H, pos + 1, D) -> (B, H, 1, D), as
    `scaled_dot_product_attention`): a decoder may bring a kernel faster at that than
    torch's. Otherwise, and for every other step, attention is torch's.
    """

    def __init__(
        self,
        config: GPTConfig,
        batch_size: int = 1,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        pad: torch.Tensor | None = None,
        attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.max_len = max_len or config.block_size
        if self.max_len > config.block_size:
            raise ValueError(f"max_len {self.max_len} exceeds block_size {config.block_size}")
        D = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, self.max_len, D)
        # Left uninitialised: a position is written before any query reads it (attention
        # reads positions :pos + T only), and zeroing a full-context cache up front costs
        # more than a short prompt's prefill (tens of MB at GPT-2's shape).
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.pos = 0
        self.pad = pad.to(self.k.device) if pad is not None and bool(pad.any()) else None
        self.attend = attend

    @property
    def batch_size(self) -> int:
        return self.k.size(1)

    def reset(self, pad: torch.Tensor | None = None) -> None:
        """Empty the cache (nothing is reallocated); `pad` sets the new rows' left padding."""
        self.pos = 0
        self.pad = pad.to(self.k.device) if pad is not None and bool(pad.any()) else None

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep row rows[i] as row i (beam search); `rows` (B,) indexes the current rows."""
        filled = slice(0, self.pos)
        self.k[:, :, :, filled] = self.k[:, rows, :, filled]
        self.v[:, :, :, filled] = self.v[:, rows, :, filled]
        if self.pad is not None:
            self.pad = self.pad[rows]

    def fits(self, T: int) -> None:
        """Refuse T more positions than the cache has room for."""
        if self.pos + T > self.max_len:
            raise ValueError(
                f"{self.pos} cached + {T} new positions exceed the cache's {self.max_len}"
            )

    def insert(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store layer `layer`'s T new keys and values (B, H, T, D) after the filled positions;
        returns every key and value the new queries attend to, (B, H, pos + T, D)."""
        end = self.pos + k.size(2)
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, T: int) -> None:
        """Count the T positions every layer has just inserted as filled."""
        self.pos += T

    def positions(self, T: int) -> torch.Tensor:
        """The position ids of the next T tokens: (1, T), or (B, T) with left padding."""
        pos = torch.arange(self.pos, self.pos + T, device=self.k.device)  # (T,)
        if self.pad is None:
            return pos[None]
        return (pos[None] - self.pad[:, None]).clamp_min(0)  # (B, T)

    def mask(self, T: int) -> torch.Tensor | None:
        """Which keys the next T queries may see, (B or 1, 1, T, pos + T) bools, or None when
        that is every filled key (one new token and no padding).

        Causal, minus the padding; a padding query still sees itself, so that no softmax row
        is empty (an all-masked row would be NaN, and 0 x NaN reaches the real tokens).
        """
        if T == 1 and self.pad is None:
            return None
        q = torch.arange(self.pos, self.pos + T, device=self.k.device)[:, None]  # (T, 1)
        key = torch.arange(self.pos + T, device=self.k.device)[None]  # (1, Tk)
        allowed = key <= q  # (T, Tk)
        if self.pad is None:
            return allowed[None, None]
        real = key[None] >= self.pad[:, None, None]  # (B, 1, Tk)
        return ((allowed[None] & real) | (key == q)[None])[:, None]  # (B, 1, T, Tk)


class CausalSelfAttention(nn.Module):
    """Multi-head masked self-attention with one fused query/key/value projection."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        mask: torch.Tensor | None = None,
        attention: list[torch.Tensor] | None = None,
        last: int = 0,
    ) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C). With `cache`, the T new keys/values are written at
        positions cache.pos.. of layer `layer` and the queries attend to every filled key
        (under `mask`, from `KVCache.mask`). With `attention`, the weights (B, H, T, Tk)
        are computed the written-out way and appended to it. `last` > 0: only the last
        `last` positions' outputs are needed, (B, last, C); the output projection runs on
        those alone."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        # (B, T, C) -> (B, H, T, D)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        causal = True
        if cache is not None:
            k, v = cache.insert(layer, k, v)  # (B, H, Tk, D): the cached keys and the new
            q = q.to(k.dtype)  # a cache may be wider than the weights (float32 for bf16)
            causal = False  # the mask (or, for one token and no padding, nothing) says it
        if attention is not None:
            y, weights = attention_reference(q, k, v, dropout=dropout, mask=mask, causal=causal)
            attention.append(weights)  # (B, H, T, Tk)
        elif cache is not None and cache.attend and T == 1 and mask is None and not dropout:
            y = cache.attend(q, k, v)  # one new query per row, read the cache's own way
        elif causal and q.requires_grad and q.is_cpu and q.dtype == torch.bfloat16:
            # Training in bf16 on the CPU: the CPU flash kernel's bf16 backward is ~3x slower
            # than its float32 one (torch 2.13), so attention itself runs in float32
            # (autocast, which would cast it back to bf16, is off for this one call).
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(
                    q.float(), k.float(), v.float(), dropout_p=dropout, is_causal=True
                ).to(q.dtype)
        elif causal:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        if last:
            y, T = y[:, :, -last:], min(last, T)  # (B, H, T, D) -> (B, H, last, D)
        y = y.to(x.dtype).transpose(1, 2).contiguous().view(B, T, C)  # -> (B, T, C)
        return self.resid_dropout(self.c_proj(y))


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout: float = 0.0,
    mask: torch.Tensor | None = None,
    causal: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(D) + mask) v, written out; returns (output, weights).

    q (B, H, T, D), k and v (B, H, Tk, D). `causal` masks the future of each of the T
    queries, taken as the last T positions of the Tk keys; `mask` (broadcast to
    (B, H, T, Tk), True = may attend) is used instead when given. The fast path uses
    `scaled_dot_product_attention`; this one exists to read and to return the attention
    weights, and is tested equal to it.
    """
    T, Tk = q.size(-2), k.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, T, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif causal:
        future = torch.ones(T, Tk, dtype=torch.bool, device=q.device).triu(Tk - T + 1)
        scores = scores.masked_fill(future, float("-inf"))
    weights = F.softmax(scores, dim=-1)
    if dropout > 0:
        weights = F.dropout(weights, p=dropout)
    return weights @ v, weights  # (B, H, T, D), (B, H, T, Tk)


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C -> GELU -> C. GPT-2 uses GELU's tanh
    approximation; the exact (erf) GELU is the same curve within 1e-3 and, on the CPU, half
    the cost forward and backward (a choice for models trained from scratch)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.approximate = "tanh" if config.gelu == "tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate)))


class Block(nn.Module):
    """A pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias, eps=1e-5)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias, eps=1e-5)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        mask: torch.Tensor | None = None,
        attention: list[torch.Tensor] | None = None,
        last: int = 0,
    ) -> torch.Tensor:
        """`last` > 0: only the last `last` positions go on after the attention (whose keys
        and values still come from every position): (B, T, C) -> (B, last, C)."""
        y = self.attn(self.ln_1(x), cache, layer, mask, attention, last)
        x = (x[:, -last:] if last else x) + y
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token + learned position embeddings, n_layer blocks, a final LayerNorm, and a head.

    The language-model head shares its weight with `wte` (weight tying, as GPT-2). With
    `config.n_classes > 0` the head is instead `score`, a Linear on the last token's state.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias, eps=1e-5)
        if config.n_classes > 0:
            self.score = nn.Linear(config.n_embd, config.n_classes, bias=True)
        else:
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            self.lm_head.weight = self.wte.weight  # tied
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer) at initialisation.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden_states(
        self,
        idx: torch.Tensor,
        kv_cache: KVCache | None = None,
        attention: list[torch.Tensor] | None = None,
        last: int = 0,
    ) -> torch.Tensor:
        """Token ids (B, T) -> final normalised hidden states (B, T, C).

        With `kv_cache`, idx holds the next T tokens after the cache's `pos` filled positions
        (a whole prompt at once, then one token per step); their keys and values are stored
        and `pos` advances by T. With `attention` (a list), each layer appends its attention
        weights (B, H, T, Tk) to it. `last` > 0 returns only the last `last` positions'
        states, (B, last, C): what scoring a window's tail or predicting the token after a
        prompt needs. The last block then runs its output projection, MLP and LayerNorms on
        those positions alone (earlier blocks still compute every position: their keys and
        values feed the attention), the same states as slicing the full result.
        """
        T = idx.size(1)  # idx: (B, T)
        if last < 0:
            raise ValueError(f"last must be >= 0, got {last}")
        final = len(self.h) - 1
        if kv_cache is None:
            if T > self.config.block_size:
                raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
            pos = torch.arange(T, device=idx.device)  # (T,)
            x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
            for layer, block in enumerate(self.h):
                x = block(x, attention=attention, last=last if layer == final else 0)
            return self.ln_f(x)
        kv_cache.fits(T)
        mask = kv_cache.mask(T)  # once for all layers
        x = self.drop(self.wte(idx) + self.wpe(kv_cache.positions(T)))  # (B, T, C)
        for layer, block in enumerate(self.h):
            x = block(x, kv_cache, layer, mask, attention, last if layer == final else 0)
        kv_cache.advance(T)
        return self.ln_f(x)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        with_logits: bool = True,
        kv_cache: KVCache | None = None,
        attention: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Language model: (B, T) ids -> logits (B, T, V), and the mean cross-entropy
        against `targets` (B, T) if given; targets equal to -100 are ignored.

        Training passes `with_logits=False`: then no logits are returned (None) and the head
        and the loss run fused, a chunk of positions at a time (`linear_cross_entropy`), the
        same loss without ever holding the (B, T, V) logits. It goes through `forward` so that
        wrappers (DistributedDataParallel, torch.compile) see it. `kv_cache` and `attention`
        are those of `hidden_states` (decoding, and capturing attention weights).
        """
        x = self.hidden_states(idx, kv_cache, attention)
        if targets is not None and not with_logits:
            flat = x.reshape(-1, x.size(-1))  # (B*T, C)
            return None, linear_cross_entropy(flat, self.lm_head.weight, targets.reshape(-1))
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-100
            )
        return logits, loss

    def classify(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Classifier: (B, T) ids, right-padded, with true `lengths` (B,) -> logits (B, n_classes),
        read from the hidden state of each sequence's last real token."""
        x = self.hidden_states(idx)  # (B, T, C)
        last = x[torch.arange(x.size(0), device=x.device), lengths - 1]  # (B, C)
        return self.score(last)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; the tied head counts once, position embeddings optionally not."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wpe.weight.numel()
        return n
