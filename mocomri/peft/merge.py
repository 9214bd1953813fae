"""A module folded into its base encoder, written as a plain backbone state dict (like ``encoder.pt``)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from mocomri.files import atomic_write
from mocomri.peft.encoder import PEMEncoder
from mocomri.peft.module_file import PEM


def merged_encoder(pem: PEM, base_encoder: nn.Module) -> nn.Module:
    """A new encoder of the base architecture whose weights include the module (eval mode).

    Raises:
        PEMError: ``base_encoder`` is not the module's base.
    """
    return PEMEncoder.from_pem(pem, copy.deepcopy(base_encoder)).merged()


def save_merged(pem: PEM, base_encoder: nn.Module, path: str | Path) -> Path:
    """Writes the merged encoder's state dict with ``torch.save``, the layout of a run's
    ``encoder.pt``, so ``mocomri probe --encoder PATH`` and :func:`create_encoder` load it."""
    state = merged_encoder(pem, base_encoder).state_dict()
    atomic_write(path, lambda f: torch.save(state, f))
    return Path(path)
