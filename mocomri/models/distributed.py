"""The collectives MoCo needs under DDP: gathering keys for the queue, and shuffle-BN.

Shuffle-BN (arXiv:1911.05722, section 3.3) encodes the key batch in an order shuffled across
ranks, so that each rank's BatchNorm statistics mix samples whose queries live elsewhere and
cannot reveal which key is a query's positive. It follows MoCo's ``builder.py``, with the
shuffle drawn on rank 0 and broadcast, so it works with any backend (gloo included).

Every rank must pass the same batch size. Use a ``DistributedSampler`` and a ``DataLoader``
with ``drop_last=True`` so that the last, smaller batch is dropped; an unequal batch raises a
``ValueError`` on every rank instead of hanging or mixing samples up.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_dist() -> bool:
    """Whether torch.distributed is available and initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank; 0 without torch.distributed."""
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    """The number of processes; 1 without torch.distributed."""
    return dist.get_world_size() if is_dist() else 1


@torch.no_grad()
def concat_all_gather(t: Tensor) -> Tensor:
    """Every rank's ``t``, concatenated in rank order; no gradient flows back.

    Raises:
        ValueError: on every rank, when the ranks' batch sizes differ.

    Shape:
        t: (B, *) on each rank.  output: (world_size·B, *); ``t`` itself on a single process.
    """
    if world_size() == 1:
        return t
    _check_equal_batches(t)
    gathered = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(gathered, t.contiguous())
    return torch.cat(gathered, dim=0)


@torch.no_grad()
def batch_shuffle_ddp(x: Tensor) -> tuple[Tensor, Tensor]:
    """This rank's share of the global batch, in an order shuffled across all ranks.

    Returns:
        ``(x_shuffled, idx_unshuffle)``; pass the encoded batch and ``idx_unshuffle`` to
        :func:`batch_unshuffle_ddp` to get each rank's own samples back in order.

    Raises:
        ValueError: on every rank, when the ranks' batch sizes differ.

    Shape:
        x: (B, *).  x_shuffled: (B, *).  idx_unshuffle: (world_size·B,).
    """
    x_all = concat_all_gather(x)  # (world_size·B, *)
    idx_shuffle = torch.randperm(x_all.shape[0], device=x.device)
    if world_size() > 1:
        dist.broadcast(idx_shuffle, src=0)  # one permutation for all ranks
    idx_unshuffle = torch.argsort(idx_shuffle)
    idx_this = idx_shuffle.view(world_size(), -1)[rank()]
    return x_all[idx_this], idx_unshuffle


@torch.no_grad()
def batch_unshuffle_ddp(x: Tensor, idx_unshuffle: Tensor) -> Tensor:
    """Undoes :func:`batch_shuffle_ddp`: this rank's own samples, in their original order.

    Shape:
        x: (B, *), encoded in shuffled order.  idx_unshuffle: (world_size·B,).  output: (B, *).
    """
    x_all = concat_all_gather(x)
    idx_this = idx_unshuffle.view(world_size(), -1)[rank()]
    return x_all[idx_this]


@torch.no_grad()
def batch_shuffle_single(x: Tensor) -> tuple[Tensor, Tensor]:
    """The batch in a random order, on one device (for split BatchNorm).

    Returns:
        ``(x[idx_shuffle], idx_unshuffle)``; ``encoded[idx_unshuffle]`` restores the order.

    Shape:
        x: (B, *).  idx_unshuffle: (B,).
    """
    idx_shuffle = torch.randperm(x.shape[0], device=x.device)
    return x[idx_shuffle], torch.argsort(idx_shuffle)


def _check_equal_batches(t: Tensor) -> None:
    size = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.empty_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    per_rank = [int(s) for s in sizes]
    if len(set(per_rank)) > 1:
        raise ValueError(
            f"per-rank batch sizes differ: {per_rank} (rank order); MoCo's key gathering and "
            "shuffle-BN need equal batches: use a DistributedSampler and drop_last=True"
        )
