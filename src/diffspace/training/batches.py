"""The order in which training images are visited, as a resumable position.

Epoch e visits the permutation π_e = randperm(N) drawn from a generator seeded by (seed, e),
in consecutive blocks of B global indices; an incomplete last block is dropped. Step s's
block is split into R·A equal chunks (R ranks, A accumulation micro-batches): chunk
g = rank·A + micro goes to that rank and micro-batch. The loss randomness of row i of the block
is drawn from its own stream seeded by (seed, s, i) (`noise.PerSampleGenerator.for_batch_rows`),
so a run is fixed by (seed, B) alone: any R and A give the same per-sample losses.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffspace.noise import mix_seed


class BatchOrder:
    """The sequence of global batches of `batch_size` indices into `n` items; (epoch, index)
    is the position of the next batch."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int = 0, index: int = 0) -> None:
        if batch_size > n:
            raise ValueError(f"batch size {batch_size} is larger than the data set ({n} images)")
        self.n = n
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = epoch
        self.index = index
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def permutation(self, epoch: int) -> Tensor:
        """π_epoch: the visiting order of epoch `epoch`."""
        if epoch != self._perm_epoch:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            self._perm = torch.randperm(self.n, generator=generator)
            self._perm_epoch = epoch
        return self._perm

    def next(self) -> Tensor:
        """The next global batch of indices; advances the position."""
        if self.index + self.batch_size > self.n:
            self.epoch, self.index = self.epoch + 1, 0
        batch = self.permutation(self.epoch)[self.index : self.index + self.batch_size]
        self.index += self.batch_size
        return batch

    def state_dict(self) -> dict[str, int]:
        """The position: epoch and index of the next batch."""
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Move to a position returned by `state_dict`."""
        self.epoch, self.index = state["epoch"], state["index"]
