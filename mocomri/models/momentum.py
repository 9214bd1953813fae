"""The momentum (EMA) update of the key encoder and its schedules (MoCo, arXiv:1911.05722, eq. 2)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


@torch.no_grad()
def momentum_update(base_encoder: nn.Module, momentum_encoder: nn.Module, m: float) -> None:
    """θ_k ← m·θ_k + (1 − m)·θ_q over the parameters, in place, in one fused op.

    Only parameters move. Buffers are left alone on purpose: as in MoCo's reference code, the
    momentum encoder keeps the BatchNorm running statistics of its own forward passes (its
    inputs are the key views, and its weights differ from the query encoder's), and
    ``num_batches_tracked`` counts its own batches.

    Args:
        base_encoder: the query encoder, θ_q.
        momentum_encoder: the key encoder, θ_k; same architecture as ``base_encoder``.
        m: the momentum coefficient m in [0, 1]; 0 copies θ_q, 1 freezes θ_k.

    Raises:
        ValueError: if ``m`` is outside [0, 1] or the two modules' parameters do not pair up.
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"m={m} must be in [0, 1]")
    base = list(base_encoder.parameters())
    momentum = list(momentum_encoder.parameters())
    if len(base) != len(momentum):
        raise ValueError(
            f"base_encoder has {len(base)} parameters but momentum_encoder has {len(momentum)}; "
            "they must share one architecture"
        )
    # lerp(θ_k, θ_q, 1 − m) = θ_k + (1 − m)(θ_q − θ_k) = m·θ_k + (1 − m)·θ_q
    torch._foreach_lerp_(momentum, base, 1.0 - m)


def constant_momentum(t: float, base: float) -> float:
    """The momentum coefficient held at ``base`` for the whole run (MoCo v1/v2).

    Args:
        t: progress through training, in [0, 1].
        base: m, in [0, 1].

    Raises:
        ValueError: if ``t`` or ``base`` is outside [0, 1].
    """
    _check_unit("t", t)
    _check_unit("base", base)
    return base


def cosine_momentum(t: float, base: float) -> float:
    """The momentum coefficient rising from ``base`` at t=0 to 1 at t=1 on a half cosine.

    m(t) = 1 − (1 − base)·(cos(πt) + 1)/2, MoCo v3's ``adjust_moco_momentum`` (arXiv:2104.02057).

    Args:
        t: progress through training, in [0, 1].
        base: m at the start, in [0, 1].

    Raises:
        ValueError: if ``t`` or ``base`` is outside [0, 1].
    """
    # 1) progress outside [0, 1] is a caller's bug, not something to clamp silently
    _check_unit("t", t)
    # 2) so is a starting momentum outside [0, 1]
    _check_unit("base", base)
    # 3) in between, a half cosine from base (t=0) to exactly 1 (t=1: cos(π) + 1 == 0.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * t) + 1.0) / 2.0


# moco.momentum_schedule -> schedule(t, base). The config checks the key against this dict; the
# module imports nothing of mocomri so that the config, the bottom layer, may import it.
MOMENTUM_SCHEDULES: dict[str, Callable[[float, float], float]] = {
    "constant": constant_momentum,
    "cosine": cosine_momentum,
}


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value} must be in [0, 1]")
