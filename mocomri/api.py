"""The Python API: a pretrained encoder and the preprocessing that turns a scan into its input.

The command line is a thin layer over functions a notebook can call with the same objects::

    import mocomri

    built = mocomri.build_manifest("my_bids", labels="my_bids/participants.tsv", label_column="diagnosis",
                                   suffixes=["T1w"])
    mocomri.write_manifest(built.manifest, "my_bids/manifest.csv")
    cfg = mocomri.load_config("configs/demo.yaml", ["data.manifest=my_bids/manifest.csv",
                                                     "train.out_dir=runs/mine"])
    mocomri.pretrain(cfg)
    metrics = mocomri.run_probe("runs/mine", "my_bids/manifest.csv", out_dir="runs/mine/probe")

    encoder = mocomri.load_encoder("runs/mine")
    features = encoder.embed("sub-01_T1w.nii.gz")  # (slices, F) for a 2D run, (1, F) for 3D

:func:`load_encoder` preprocesses a file exactly as the probe's evaluation inputs are made
(:func:`mocomri.data.datasets.build_eval_dataset` on a one-row manifest: reorientation,
resampling, intensity normalisation, the foreground slices of a 2D run, the resize), so features
computed here are those the probe reads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mocomri.config import Config
from mocomri.data.datasets import EvalDataset, build_eval_dataset
from mocomri.data.manifest import Manifest, ManifestRow
from mocomri.errors import ConfigError
from mocomri.eval.features import extract_features, load_encoder_source, resolve_device


@dataclass
class Encoder:
    """A pretrained backbone with the config it was trained under.

    Attributes:
        model: the backbone in eval mode; ``model(x)`` returns the pooled features (B, F).
        config: the run's config (its ``data`` section decides the preprocessing).
        feature_dim: F.
        weights: the ``encoder.pt`` the weights came from (None for ``random``).
    """

    model: nn.Module
    config: Config
    feature_dim: int
    weights: Path | None

    def inputs(self, path: str | Path, modality: str = "unknown") -> EvalDataset:
        """The file's evaluation inputs, as a dataset of ``{"image", "row"}`` items.

        Args:
            path: a NIfTI volume or a 2D image.
            modality: its contrast (``T1w``, ...), for configs that stack or select contrasts.

        Raises:
            DataError: the file cannot be read, or is empty; the message names it.
            ConfigError: the run stacks several contrasts per input (``data.channels``): one
                file is not an input; build a manifest of the sessions instead.
        """
        if self.config.data.channels:
            raise ConfigError(f"this encoder reads {len(self.config.data.channels)} contrasts stacked "
                              f"(data.channels={self.config.data.channels}): one file is not its input; "
                              "give a manifest of the sessions to mocomri.data.datasets.build_eval_dataset")
        path = Path(path).resolve()
        row = ManifestRow(path=path.name, subject=path.stem, modality=modality, split="test")
        data_cfg = replace(self.config.data, skip_bad=False)
        return build_eval_dataset(Manifest(path.parent, [row]), data_cfg, ["test"], progress=False)

    def preprocess(self, path: str | Path, modality: str = "unknown") -> torch.Tensor:
        """The encoder's inputs for one file.

        Shape:
            returns: (N, C, H, W) for a 2D run (N foreground slices of a volume, or 1 image);
            (1, C, D, H, W) for a 3D run.
        """
        dataset = self.inputs(path, modality)
        return torch.stack([dataset[i]["image"] for i in range(len(dataset))])

    def embed(self, path: str | Path, modality: str = "unknown", *, device: str = "auto") -> np.ndarray:
        """The pooled features of one file's inputs.

        Shape:
            returns: (N, F), one row per input of :meth:`preprocess`.
        """
        return extract_features(self.model, self.inputs(path, modality), device=resolve_device(device))


def load_encoder(run: str | Path, config: Config | None = None) -> Encoder:
    """The encoder of a pretraining run directory, an ``encoder.pt`` or ``random``.

    Args:
        run: ``RUN_DIR`` (its ``encoder.pt`` and ``config.yaml``), a bare ``encoder.pt`` (with a
            ``config.yaml`` beside it, or ``config``), or ``"random"``.
        config: the architecture and preprocessing when the run has no ``config.yaml``, or to
            override it.

    Raises:
        FileNotFoundError: no weights at ``run``.
        ConfigError: the weights do not fit the architecture; the message names both.
    """
    source = load_encoder_source(run, config.model if config else None)
    cfg = config or source.run_config or Config()
    model, feature_dim = source.build()
    return Encoder(model.eval(), cfg, feature_dim, source.weights_path)
