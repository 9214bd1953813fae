"""The pretraining optimiser, named by ``optim.name``: SGD (as in MoCo v1/v2) or AdamW.

The learning rate given here is the config's; the training loop sets each step's rate
(:mod:`mocomri.train.lr_schedule`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # type-only: the config imports OPTIMIZERS from here, so a run-time import would be a cycle
    from mocomri.config import Config, OptimConfig


def _sgd(params: list[nn.Parameter], optim: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=optim.lr, momentum=optim.sgd_momentum, weight_decay=optim.weight_decay)


def _adamw(params: list[nn.Parameter], optim: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)


# optim.name -> factory(trainable parameters, the optim section). The config checks the key
# against this dict; the module imports nothing of mocomri so that the config may import it.
OPTIMIZERS: dict[str, Callable[[list[nn.Parameter], OptimConfig], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "adamw": _adamw,
}


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optim.name`` over the parameters of ``model`` that require a gradient.

    Raises:
        ValueError: for a name not in :data:`OPTIMIZERS`.
    """
    if cfg.optim.name not in OPTIMIZERS:
        raise ValueError(f"optim.name={cfg.optim.name!r} must be {' or '.join(map(repr, OPTIMIZERS))}")
    params = [p for p in model.parameters() if p.requires_grad]
    return OPTIMIZERS[cfg.optim.name](params, cfg.optim)
