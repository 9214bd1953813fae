"""What a module is measured against: the linear probe, and full fine-tuning at the same step budget.

- :func:`linear_probe`: the frozen base encoder's features and the project's linear probe
  (:func:`mocomri.eval.probe.fit_linear_probe`: standardised features, logistic regression with
  ``C`` chosen by subject-grouped cross-validation), the probe ``mocomri probe`` reports;
- :func:`fine_tune`: every weight of the encoder and a linear head, trained by the loop and step of
  module training (:func:`mocomri.peft.train.train_ce`: same inputs, batches, optimiser and
  number of steps), with BatchNorm in train mode as in ordinary fine-tuning. Its learning rate
  is the caller's (full fine-tuning wants a smaller one than a module).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mocomri.config import Config
from mocomri.eval.items import LabelledItems
from mocomri.files import atomic_write, file_digest
from mocomri.peft.inputs import Base, labelled_items, load_base
from mocomri.peft.module_file import Head
from mocomri.peft.train import TrainOptions, train_ce


def linear_probe(base: Base, train: LabelledItems, *, seed: int = 0, device: str = "auto"):
    """The linear probe fitted on the frozen base encoder's features of ``train``.

    Returns:
        The fitted scikit-learn pipeline (:func:`mocomri.eval.probe.fit_linear_probe`).
    """
    from mocomri.eval.features import extract_features
    from mocomri.eval.probe import fit_linear_probe

    features = extract_features(base.encoder, train.dataset, device=device)  # (N, F)
    return fit_linear_probe(features, train.labels, train.subjects, seed=seed)


def probe_proba(probe, base: Base, items: LabelledItems, *, device: str = "auto") -> np.ndarray:
    """The probe's class probabilities of ``items`` (labelled with the classes the probe was fitted on).

    Shape:
        returns: (N, K) in ``items.classes`` order
    """
    from mocomri.eval.features import extract_features
    from mocomri.eval.probe import predict_proba

    features = extract_features(base.encoder, items.dataset, device=device)  # (N, F)
    return predict_proba(probe, features, len(items.classes))


@dataclass
class FineTuned:
    """A fully fine-tuned encoder: its weights (the base architecture's keys), its head, its provenance."""

    encoder: dict[str, torch.Tensor]
    head: Head
    provenance: dict[str, Any] = field(default_factory=dict)

    def build(self, base: Base) -> nn.Module:
        """The fine-tuned encoder: a copy of ``base.encoder`` with these weights, in eval mode."""
        import copy

        encoder = copy.deepcopy(base.encoder)
        encoder.load_state_dict(self.encoder)
        return encoder.eval()


def fine_tune(encoder: str | Path, manifest: str | Path, config: Config | None = None,
              options: TrainOptions | None = None) -> FineTuned:
    """Trains the whole encoder and a linear head with cross-entropy on the labelled ``train`` rows.

    The same loop, inputs, batches and head initialisation as a ``ce`` module trained with the
    same ``options`` (:func:`mocomri.peft.train.train_module`); only the trainable parameters and
    BatchNorm's mode differ.
    """
    from mocomri.eval.features import resolve_device

    options = options or TrainOptions()
    base = load_base(encoder, config)
    device = resolve_device(options.device)
    model = base.encoder.requires_grad_(True).to(device)
    torch.manual_seed(options.seed)
    items = labelled_items(manifest, base.config, "train")
    head = train_ce(model, list(model.parameters()), base.feature_dim, items, options, device)
    return FineTuned({k: v.detach().cpu() for k, v in model.state_dict().items()}, head, {
        "operation": "fine_tune",
        "manifest": str(manifest),
        "manifest_sha1": file_digest(manifest),
        "labels": list(head.labels),
        "encoder": base.source.provenance(),
        "options": asdict(options),
    })


def save_fine_tuned(tuned: FineTuned, path: str | Path) -> Path:
    """Writes a plain dict (``encoder``, ``head``, ``provenance``) with ``torch.save``, atomically."""
    record = {"encoder": tuned.encoder, "provenance": tuned.provenance,
              "head": {"labels": list(tuned.head.labels), "weight": tuned.head.weight, "bias": tuned.head.bias}}
    atomic_write(path, lambda f: torch.save(record, f))
    return Path(path)


def load_fine_tuned(path: str | Path) -> FineTuned:
    """Reads a file written by :func:`save_fine_tuned` (``weights_only``)."""
    record = torch.load(path, map_location="cpu", weights_only=True)
    head = record["head"]
    return FineTuned(record["encoder"], Head(tuple(head["labels"]), head["weight"], head["bias"]), record["provenance"])
