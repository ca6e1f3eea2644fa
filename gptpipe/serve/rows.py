"""A key/value cache whose rows fill at their own pace, for decoding many requests together.

`KVCache` keeps one position count for all its rows: a batch of prompts starts together and
ends together. A server's requests arrive and finish at any time, so here row b holds
`lengths[b]` positions of its own sequence, counted from position 0: a request's prompt is
prefilled on its own and copied into a free row, every active row then takes one new token
per step in one batched forward pass (the weights are read once per step for all of them),
and a finished row is handed to the next request. The active rows are kept first (rows
0..active-1), so a step's keys and values are a view of the cache, never a copy.

A step's queries attend to keys 0..lengths[b] of their own row. With `kernel`, the cache
reads itself through `kernels.one_query_attention`, each row to its own length (no mask);
otherwise through torch's attention, the longer rows' extra keys masked for the shorter
ones (reading the longest row's length for every row; torch's masked bf16 attention is also
slow on some CPUs: 2.2 of a 5.5 ms step of 16 rows, measured on an AVX-512 BF16 CPU). Up
to four rows step through `FusedStep` (`gptpipe.generate.fused_step`), which reads each row
to its own length too.

Unlike `KVCache`, the cache starts zeroed: a shorter row's step reads the positions beyond
its length (masked, weight 0), and uninitialised memory may hold NaN, which 0 x NaN carries
into its output.
"""

from __future__ import annotations

import torch

from gptpipe.generate import kernels
from gptpipe.model.gpt import GPTConfig, KVCache


class RowCache(KVCache):
    """`rows` sequences of up to `max_len` positions each; `active` of them (the first ones)
    take part in a step, one new token each; `kernel`: read through the cache kernel (see the
    module docstring)."""

    def __init__(
        self,
        config: GPTConfig,
        rows: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        kernel: bool = False,
    ) -> None:
        super().__init__(
            config, rows, max_len, device, dtype, attend=self._read if kernel else None
        )
        self.k.zero_()  # see the module docstring: never NaN, even where masked
        self.v.zero_()
        self.lengths = [0] * rows  # filled positions of each row (host side: no syncs)
        self.active = 0
        self._rows = torch.arange(rows, device=self.k.device)
        self._at = torch.zeros(rows, dtype=torch.long, device=self.k.device)
        self._lengths = torch.ones(rows, dtype=torch.long, device=self.k.device)

    # --------------------------------------------------------------- rows

    def place(self, row: int, prefilled: KVCache) -> None:
        """Row `row` takes the sequence a one-row cache was prefilled with."""
        n = prefilled.pos
        self.k[:, row, :, :n] = prefilled.k[:, 0, :, :n]
        self.v[:, row, :, :n] = prefilled.v[:, 0, :, :n]
        self.lengths[row] = n

    def copy_row(self, source: int, target: int) -> None:
        """Row `target` takes row `source`'s sequence (compacting: a finished row is filled
        with the last active one, so that the active rows stay first)."""
        n = self.lengths[source]
        self.k[:, target, :, :n] = self.k[:, source, :, :n]
        self.v[:, target, :, :n] = self.v[:, source, :, :n]
        self.lengths[target] = n

    # ------------------------------------------------- the model's cache interface

    def fits(self, T: int) -> None:
        if T != 1:
            raise ValueError(f"a row cache steps one token at a time, not {T}")
        longest = max(self.lengths[: self.active], default=0)
        if longest + T > self.max_len:
            raise ValueError(f"a row of {longest} positions has no room in {self.max_len}")
        self._at[: self.active] = torch.tensor(self.lengths[: self.active])
        torch.add(self._at, 1, out=self._lengths)  # each row's keys after this step
        self._keys = longest + T  # the keys this step reads, the longest row's

    def insert(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.active
        rows, at = self._rows[:n], self._at[:n]
        # (n, H, D): each row's next position (a cache may be wider than the weights)
        self.k[layer, rows, :, at] = k[:, :, 0].to(self.k.dtype)
        self.v[layer, rows, :, at] = v[:, :, 0].to(self.v.dtype)
        return self.k[layer, :n, :, : self._keys], self.v[layer, :n, :, : self._keys]

    def advance(self, T: int) -> None:
        for row in range(self.active):
            self.lengths[row] += T

    def positions(self, T: int) -> torch.Tensor:
        return self._at[: self.active, None]  # (n, 1): each row's next position

    def mask(self, T: int) -> torch.Tensor | None:
        if self.attend is not None:
            return None  # `_read` keeps each row to its own keys
        keys = torch.arange(self._keys, device=self.k.device)[None]  # (1, Tk)
        return (keys <= self._at[: self.active, None])[:, None, None]  # (n, 1, 1, Tk)

    def _read(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """One query per active row over that row's own keys (q (n, H, 1, D), k and v
        (n, H, longest, D)) -> (n, H, 1, D) float32."""
        return kernels.one_query_attention(q, k, v, self._lengths[: self.active])
