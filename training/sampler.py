"""A resumable, shardable, infinite batch order.

Batch ``i`` of the run is a pure function of (seed, i, rank, world size): epoch ``e`` uses the
permutation ``randperm(n, seed + e)``; each rank takes every ``world``-th index of it. A run
resumed at iteration ``i`` therefore sees exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    def __init__(self, num_items: int, batch_size: int, seed: int = 0, start_iter: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if batch_size < 1 or world_size < 1:  # would never yield a batch: the loop would spin forever
            raise ValueError(f"model.batch_size must be >= 1, got {batch_size} (with {world_size} processes)")
        if num_items < batch_size * world_size:
            raise ValueError(f"dataset has {num_items} items, fewer than one batch "
                             f"({batch_size} x {world_size} processes)")
        self.n = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.start_iter = start_iter
        self.rank = rank
        self.world = world_size
        self.shuffle = shuffle
        self.per_epoch = (num_items // world_size) // batch_size  # full batches per rank

    def _epoch_indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
        else:
            perm = torch.arange(self.n)
        return perm[self.rank::self.world].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        i = self.start_iter
        while True:
            epoch, offset = divmod(i, self.per_epoch)
            idx = self._epoch_indices(epoch)
            for b in range(offset, self.per_epoch):
                yield idx[b * self.batch_size:(b + 1) * self.batch_size]
                i += 1

    def __len__(self) -> int:  # infinite; report one epoch
        return self.per_epoch
