"""Which training windows each step reads: a seeded order over epochs, a slice per rank, and
evenly spread validation windows.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


class WindowSampler:
    """Which windows each step's batch uses: epochs of seeded permutations, split across ranks.

    The global stream of window indices is perm(0) + perm(1) + ..., where perm(e) is a
    permutation of all windows seeded by (seed, e). Step s takes the global batch at positions
    [s*G, (s+1)*G) with G = batch_size * world_size (a batch may straddle two epochs), and rank
    r takes its slice [r*batch_size, (r+1)*batch_size) of it. Everything follows from
    (seed, step), so a resumed run sees the same batches, and no window repeats within an epoch.
    """

    def __init__(
        self, num_windows: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if num_windows < 1:
            raise ValueError("num_windows must be >= 1")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
        self.num_windows = num_windows
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.global_batch = batch_size * world_size
        self._perms: OrderedDict[int, np.ndarray] = OrderedDict()

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of all windows in `epoch` (a few recent epochs are cached)."""
        perm = self._perms.get(epoch)
        if perm is None:
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch])
            perm = rng.permutation(self.num_windows)
            self._perms[epoch] = perm
            while len(self._perms) > 3:
                self._perms.popitem(last=False)
        return perm

    def epoch(self, step: int) -> float:
        """Epochs completed (fractional) after `step` steps."""
        return step * self.global_batch / self.num_windows

    def indices(self, step: int) -> np.ndarray:
        """Window indices of this rank's batch at `step` (0-based), as int64."""
        if step < 0:
            raise ValueError("step must be >= 0")
        first = step * self.global_batch + self.rank * self.batch_size
        positions = np.arange(first, first + self.batch_size, dtype=np.int64)
        epochs = positions // self.num_windows
        offsets = positions % self.num_windows
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            out[mask] = self.permutation(int(epoch))[offsets[mask]]
        return out


def spread(n: int, count: int, batch_size: int) -> list[np.ndarray]:
    """`count` indices spread evenly over range(n) (all of them if n <= count), in batches:
    a fixed validation set that samples the whole split, not just its beginning."""
    picked = np.unique(np.linspace(0, n - 1, num=min(n, count)).round().astype(np.int64))
    return [picked[s : s + batch_size] for s in range(0, len(picked), batch_size)]
