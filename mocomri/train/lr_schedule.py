"""Learning-rate schedule: linear warm-up, then cosine decay, as a pure function of the step."""

from __future__ import annotations

import math


def scaled_lr(base_lr: float, global_batch_size: int) -> float:
    """The linear scaling rule (Goyal et al., arXiv:1706.02677): ``base_lr`` is per 256 images."""
    if global_batch_size <= 0:
        raise ValueError(f"global_batch_size={global_batch_size} must be positive")
    return base_lr * global_batch_size / 256


def warmup_cosine_lr(
    step: float, total_steps: int, warmup_steps: float, peak_lr: float, min_ratio: float = 0.0
) -> float:
    """The learning rate at ``step`` (may be fractional).

    Args:
        step: optimiser steps taken so far.
        total_steps: the run's length in steps.
        warmup_steps: steps of linear warm-up from 0 to ``peak_lr``.
        peak_lr: the rate reached at the end of warm-up.
        min_ratio: the floor of the cosine, as a fraction of ``peak_lr``.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps={total_steps} must be positive")
    min_lr = peak_lr * min_ratio
    # 1) linear warm-up (the +1 makes the first step's rate non-zero)
    if step < warmup_steps:
        return peak_lr * (step + 1) / (warmup_steps + 1)
    # 2) past the end: hold the floor
    if step >= total_steps:
        return min_lr
    # 3) cosine decay from peak_lr to min_lr over the remaining steps
    progress = (step - warmup_steps) / max(1.0, total_steps - warmup_steps)
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
