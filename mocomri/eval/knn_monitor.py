"""The kNN monitor: the frozen backbone's kNN accuracy during pretraining, as the probe's report computes it.

Pretraining does not import it: a caller hands the class to
:func:`mocomri.train.pretrain.pretrain` (``monitor=KnnMonitor``), which builds it on the main
rank when ``log.knn_monitor`` is set.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from mocomri.config import Config
from mocomri.data.datasets import build_eval_dataset
from mocomri.data.manifest import Manifest
from mocomri.eval.features import extract_features
from mocomri.eval.probe import fit_knn_probe


class Placement(Protocol):
    """Where the monitor extracts features: the run's device and precision (a run's ``Runtime``)."""

    device: torch.device
    precision: str


class KnnMonitor:
    """kNN accuracy of the frozen backbone when the manifest has labelled splits.

    The loop measures it at step 0, every ``log.knn_every_steps`` steps and at the last step:
    an epoch can be a few dozen steps, and a measurement at every epoch's end cost a run on
    such a set a large share of its time.

    The same features and kNN as the probe's report (:func:`mocomri.eval.features.extract_features`,
    :func:`mocomri.eval.probe.fit_knn_probe`), on at most ``log.knn_max_items`` items per side.
    """

    def __init__(self, manifest: Manifest, cfg: Config, rt: Placement):
        self.ready = False
        labelled = [i for i, r in enumerate(manifest.rows) if r.label]
        train = [i for i in labelled if manifest.rows[i].split == "train"]
        test = [i for i in labelled if manifest.rows[i].split in ("val", "test")]
        if not train or not test:
            return
        self.rt = rt
        self.k = cfg.log.knn_k
        labels = [r.label for r in manifest.rows]
        self.sides = []  # (dataset, labels of its items)
        for splits in (["train"], ["val"] if any(manifest.rows[i].split == "val" for i in test) else ["test"]):
            ds = build_eval_dataset(manifest, cfg.data, splits)
            rows = ds.item_rows
            if len(ds) > cfg.log.knn_max_items:
                g = torch.Generator().manual_seed(0)
                keep = sorted(torch.randperm(len(ds), generator=g)[: cfg.log.knn_max_items].tolist())
                ds, rows = torch.utils.data.Subset(ds, keep), [rows[i] for i in keep]
            self.sides.append((ds, [labels[r] for r in rows]))
        self.ready = True

    def measure(self, backbone: torch.nn.Module, step: int) -> float | None:
        """The kNN accuracy of ``backbone`` on the held-out side; None without labelled splits."""
        if not self.ready:
            return None
        was_training = backbone.training
        (ftr, ytr), (fte, yte) = (
            (extract_features(backbone, ds, batch_size=256, device=self.rt.device, bf16=self.rt.precision == "bf16"),
             np.array(y)) for ds, y in self.sides
        )
        backbone.train(was_training)
        return float((fit_knn_probe(ftr, ytr, k=self.k).predict(fte) == yte).mean())
