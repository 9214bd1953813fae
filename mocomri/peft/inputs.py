"""What module training, composition and evaluation read: the base encoder and labelled items."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mocomri.config import Config
from mocomri.errors import DataError


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
    from mocomri.eval.features import load_encoder_source

    source = load_encoder_source(encoder, config.model if config else None)
    cfg = config or source.run_config or Config()
    backbone, feature_dim = source.build(seed=seed)
    return Base(backbone.eval(), feature_dim, cfg, source)


def resolve_config(encoder: str | Path | None, config: str | Path | None = None,
                   overrides: list[str] | None = None) -> Config | None:
    """The config a command works with: ``config``, else the encoder's run ``config.yaml``, with ``overrides``.

    Returns:
        None when there is neither a file nor an override (:func:`load_base` then takes the run's
        config, or the defaults).
    """
    from mocomri.config import load_config
    from mocomri.run_dir import find_run_config

    path = config
    if path is None and encoder and str(encoder) != "random":
        path = find_run_config(encoder)
    return load_config(path, overrides) if (path or overrides) else None


@dataclass
class LabelledItems:
    """The labelled items of one split, in dataset order.

    Shape:
        labels, subjects: (N,)
    """

    dataset: Any
    labels: np.ndarray  # index into label_names
    subjects: np.ndarray
    label_names: tuple[str, ...]


def labelled_items(manifest: str | Path, config: Config, split: str,
                   label_names: tuple[str, ...] | None = None) -> LabelledItems:
    """The labelled rows of ``split`` as an evaluation dataset (deterministic inputs).

    Args:
        manifest: the manifest CSV.
        config: its ``data`` section decides the inputs.
        split: ``train``, ``val`` or ``test``.
        label_names: the classes, in head order; None takes the sorted labels of ``split``.

    Raises:
        DataError: no labelled rows in ``split``, or a label that is not in ``label_names``.
    """
    import dataclasses

    from mocomri.data.datasets import build_eval_dataset
    from mocomri.data.manifest import read_manifest

    full = read_manifest(manifest)
    rows = [r for r in full.rows if r.label and r.split == split]
    if not rows:
        raise DataError(f"{manifest}: no labelled '{split}' rows")
    names = tuple(label_names) if label_names is not None else tuple(sorted({r.label for r in rows}))
    unknown = sorted({r.label for r in rows} - set(names))
    if unknown:
        raise DataError(f"{manifest}: '{split}' label(s) {', '.join(unknown)} are not among the head's "
                        f"classes {', '.join(names)}")
    data_cfg = dataclasses.replace(config.data, manifest=str(manifest))
    dataset = build_eval_dataset(full.replace_rows(rows), data_cfg, [split])
    item_rows = np.asarray(dataset.item_rows, dtype=int)
    index = {name: i for i, name in enumerate(names)}
    return LabelledItems(dataset, np.array([index[rows[i].label] for i in item_rows]),
                         np.array([rows[i].subject for i in item_rows]), names)
