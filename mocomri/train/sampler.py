"""A resumable, rank-aware sampler whose order and augmentation seeds are pure functions of the step.

PyTorch's samplers keep their position in iterator state that a checkpoint cannot capture, and
worker RNGs make augmentations depend on which worker served an item. Here both the order and
each item's augmentation seed derive from ``(seed, epoch, position)``, so a resumed run draws
exactly the batches (and views) an uninterrupted run would have drawn.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, item_seed)`` pairs for one rank, starting at any batch of any epoch.

    Every rank computes the same permutation of the dataset for an epoch, drops the tail so that
    each rank gets the same number of full batches (shuffle-BN across ranks needs equal batch
    sizes), and takes its own strided share.

    Args:
        num_items: the dataset's length.
        batch_size: the per-rank batch size.
        seed: the run's seed.
        rank: this process's rank.
        world_size: the number of processes.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size} must be positive")
        if num_items < batch_size * world_size:
            raise ValueError(
                f"the dataset has {num_items} items, fewer than one global batch "
                f"(batch_size={batch_size} x world_size={world_size}); lower train.batch_size"
            )
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_items // (self.batch_size * self.world_size)

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        """The next iteration yields epoch ``epoch`` from its batch ``start_batch`` on."""
        self.epoch = epoch
        self.start_batch = start_batch

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_items, generator=g)
        # item seeds: distinct per (epoch, position), identical on every rank and every resume
        seeds = torch.randint(0, 2**31 - 1, (self.num_items,), generator=g)
        used = self.batches_per_epoch * self.batch_size * self.world_size
        mine = torch.arange(self.rank, used, self.world_size)[self.start_batch * self.batch_size :]
        for pos in mine.tolist():
            yield int(order[pos]), int(seeds[pos])
