"""One MoCo training step, the one :func:`mocomri.train.pretrain.pretrain` runs and benchmarks time."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch


def train_step(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    view_q: torch.Tensor,
    view_k: torch.Tensor,
    subjects: torch.Tensor | None,
    *,
    lr: float,
    momentum: float,
    autocast: Callable[[], AbstractContextManager],
):
    """Sets the learning rate, runs both encoders (the momentum update happens in the forward),
    back-propagates the InfoNCE loss and steps the optimiser.

    Args:
        net: the MoCo module (possibly wrapped in DDP or compiled).
        optimizer: over the query encoder's parameters.
        scaler: the grad scaler (enabled for fp16 only).
        view_q: the query encoder's views. Shape: (B, C, *S).
        view_k: the momentum encoder's views. Shape: (B, C, *S).
        subjects: subject id per item, for same-subject masking, or None. Shape: (B,).
        lr: this step's learning rate.
        momentum: m for this step's momentum update (from a schedule, see ``mocomri.models.momentum``).
        autocast: the runtime's autocast context factory.

    Returns:
        The module's output (``loss``, ``accuracy``, logits summaries, ``q``, ``k``), not synced to the host.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast():
        out = net(view_q, view_k, momentum=momentum, subjects=subjects)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(out.loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return out
