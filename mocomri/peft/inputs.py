"""What module training, composition and evaluation read: the base encoder and labelled items."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mocomri.config import Config
from mocomri.data.datasets import build_eval_dataset
from mocomri.data.manifest import read_manifest
from mocomri.errors import DataError
from mocomri.eval.features import load_encoder_source
from mocomri.eval.items import LabelledItems


@dataclass
class Base:
    """The base encoder, its feature width F, and the resolved config (architecture and data)."""

    encoder: nn.Module
    feature_dim: int
    config: Config
    source: Any  # mocomri.eval.features.EncoderSource


def load_base(encoder: str | Path, config: Config | None = None, seed: int = 0) -> Base:
    """The base encoder from a run directory, an ``encoder.pt`` or ``random`` (seeded), in eval mode.

    The config is ``config`` when given, else the run's ``config.yaml``, else the defaults.
    """
    source = load_encoder_source(encoder, config.model if config else None)
    cfg = config or source.run_config or Config()
    backbone, feature_dim = source.build(seed=seed)
    return Base(backbone.eval(), feature_dim, cfg, source)


def labelled_items(manifest: str | Path, config: Config, split: str,
                   classes: tuple[str, ...] | None = None) -> LabelledItems:
    """The labelled rows of ``split`` as an evaluation dataset (deterministic inputs).

    Args:
        manifest: the manifest CSV.
        config: its ``data`` section decides the inputs.
        split: ``train``, ``val`` or ``test``.
        classes: the class names, in head order; None takes the sorted labels of ``split``.

    Returns:
        The items of ``split``; an item's evaluation unit is its manifest row.

    Raises:
        DataError: no labelled rows in ``split``, or a label that is not in ``classes``.
    """
    full = read_manifest(manifest)
    rows = [r for r in full.rows if r.label and r.split == split]
    if not rows:
        raise DataError(f"{manifest}: no labelled '{split}' rows")
    names = tuple(classes) if classes is not None else tuple(sorted({r.label for r in rows}))
    unknown = sorted({r.label for r in rows} - set(names))
    if unknown:
        raise DataError(f"{manifest}: '{split}' label(s) {', '.join(unknown)} are not among the head's "
                        f"classes {', '.join(names)}")
    data_cfg = dataclasses.replace(config.data, manifest=str(manifest))
    labelled = full.replace_rows(rows)
    dataset = build_eval_dataset(labelled, data_cfg, [split])
    item_rows = np.asarray(dataset.item_rows, dtype=int)
    index = {name: i for i, name in enumerate(names)}
    return LabelledItems(dataset, np.array([index[rows[i].label] for i in item_rows]),
                         np.array([rows[i].subject for i in item_rows]), names,
                         splits=np.full(len(item_rows), split), units=item_rows, manifest=labelled)
