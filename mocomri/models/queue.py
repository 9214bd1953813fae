"""The FIFO queue of negative keys (MoCo, arXiv:1911.05722, section 3.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KeyQueue(nn.Module):
    """A ring buffer holding the ``queue_size`` most recent keys and the subject of each.

    The keys, their subjects and the write pointer are registered buffers, so the queue moves
    with ``.to(device)`` and is saved and restored by ``state_dict()`` with the rest of the model.
    It starts full of random unit vectors whose subject is -1 (unknown), as in MoCo.

    Args:
        queue_size: K in the MoCo paper (arXiv:1911.05722; 65536 there).
        dim: C, the dimension of a key (the projector's output).

    Raises:
        ValueError: if ``queue_size`` or ``dim`` is not positive.

    Shape:
        keys: (K, C), L2-normalised rows.  subjects: (K,) int64.  ptr: () int64, the next slot.
    """

    keys: Tensor
    subjects: Tensor
    ptr: Tensor

    def __init__(self, queue_size: int, dim: int) -> None:
        super().__init__()
        if queue_size <= 0:
            raise ValueError(f"queue_size={queue_size} must be positive")
        if dim <= 0:
            raise ValueError(f"dim={dim} must be positive")
        self.queue_size = queue_size
        self.dim = dim
        self.register_buffer("keys", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("subjects", torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: Tensor, subjects: Tensor | None = None) -> None:
        """Writes ``keys`` over the oldest entries, in place.

        The result is the same as pushing the keys one at a time: any batch size works, and a
        batch larger than the queue leaves its newest ``queue_size`` keys, oldest first from
        the pointer on.

        Args:
            keys: the new keys, L2-normalised.
            subjects: the subject id of each key; None records -1 (unknown).

        Raises:
            ValueError: if ``keys`` is not (B, C) or ``subjects`` is not (B,).

        Shape:
            keys: (B, C).  subjects: (B,).
        """
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys.shape={tuple(keys.shape)} must be (B, {self.dim})")
        batch = keys.shape[0]
        if subjects is None:
            subjects = torch.full((batch,), -1, dtype=torch.long, device=keys.device)
        if subjects.shape != (batch,):
            raise ValueError(f"subjects.shape={tuple(subjects.shape)} must be ({batch},) to match keys")

        size = self.queue_size
        start = self.ptr
        if batch > size:
            # Only the newest K keys survive; they start where the K-th newest would have landed.
            start = (start + batch - size) % size
            keys, subjects = keys[-size:], subjects[-size:]
            batch = size
        # The slots, wrapping around the ring, computed on the device: no host sync per step.
        slots = (start + torch.arange(batch, device=self.keys.device)) % size
        self.keys.index_copy_(0, slots, keys.to(self.keys.dtype))
        self.subjects.index_copy_(0, slots, subjects.to(self.subjects.dtype))
        self.ptr.copy_((start + batch) % size)

    def extra_repr(self) -> str:
        return f"queue_size={self.queue_size}, dim={self.dim}"
