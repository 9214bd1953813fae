"""A backbone's starting weights from an earlier run (``model.init``): read, and checked against
the architecture the config describes before any data is read.

Pretraining on a new site or scanner often continues from an encoder pretrained elsewhere rather
than from random init; the weights come from a run directory or a bare ``encoder.pt`` (the
backbone's ``state_dict``, as :func:`mocomri.train.pretrain.export_encoder` writes it).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mocomri.errors import ConfigError
from mocomri.files import file_digest
from mocomri.models.encoders import encoder_from_config
from mocomri.run_dir import load_run

if TYPE_CHECKING:  # type-only: the config imports the encoder registry, so a run-time import would be a cycle
    from mocomri.config import ModelConfig


@dataclass(frozen=True)
class InitialWeights:
    """Backbone weights that fit an architecture.

    Attributes:
        path: the ``encoder.pt`` read.
        sha1: its digest (:func:`mocomri.files.file_digest`), for the run's record.
        state: the backbone's ``state_dict``, on the CPU.
    """

    path: Path
    sha1: str
    state: dict[str, torch.Tensor]


def read_initial_weights(source: str | Path, model: ModelConfig) -> InitialWeights:
    """Reads the weights of ``source`` (a run directory or an ``encoder.pt``) and checks that
    every parameter and buffer of the backbone ``model`` describes is there with its shape.

    Raises:
        FileNotFoundError: the directory has no ``encoder.pt``, or the file does not exist.
        ConfigError: the file is not a backbone's ``state_dict`` (a checkpoint, say), or does not
            fit the architecture; the message names the file and the first differing parameter
            with both shapes.
    """
    key = f"model.init={source}"
    try:
        path = load_run(source).weights
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{key}: {e}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # The ways torch.load fails on a file that holds no torch weights (a YAML, a truncated file...).
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, KeyError) as e:
        detail = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(f"{key}: torch cannot read {path} as weights ({type(e).__name__}: {detail})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        held = ", ".join(map(str, list(state)[:4])) if isinstance(state, dict) else type(state).__name__
        raise ConfigError(f"{key}: {path} is not an encoder's state_dict (it holds {held}); "
                          "give a run directory or its encoder.pt")
    with torch.device("meta"):  # shapes only: no memory, no draw from the RNG
        reference, _ = encoder_from_config(model)
    mismatch = _first_mismatch(state, reference.state_dict())
    if mismatch:
        raise ConfigError(f"{key}: {path} does not fit model.name={model.name} width={model.width} "
                          f"in_channels={model.in_channels} norm={model.norm}: {mismatch}")
    return InitialWeights(path=path, sha1=file_digest(path), state=state)


def _first_mismatch(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> str | None:
    """The first parameter or buffer, in the model's order, missing from ``found`` or of another
    shape; else the first one ``found`` holds that the model lacks; None when all match."""
    for name, tensor in expected.items():
        if name not in found:
            return f"{name} {tuple(tensor.shape)} is not in the file"
        if found[name].shape != tensor.shape:
            return f"{name} is {tuple(found[name].shape)} in the file but {tuple(tensor.shape)} in the model"
    extra = next((name for name in found if name not in expected), None)
    return f"{extra} {tuple(found[extra].shape)} is in the file but not in the model" if extra else None
