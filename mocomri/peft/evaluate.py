"""A module's task head on its merged encoder: class probabilities, metrics and 95% bootstrap CIs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mocomri.config import Config
from mocomri.eval.bootstrap import bootstrap_metrics
from mocomri.eval.features import extract_features
from mocomri.eval.items import LabelledItems
from mocomri.eval.metrics import classification_metrics
from mocomri.files import file_digest
from mocomri.peft.inputs import Base, labelled_items, load_base
from mocomri.peft.merge import merged_encoder
from mocomri.peft.module_file import PEM, Head, load_pem
from mocomri.peft.spec import PEMError


def head_for(pem: PEM, labels: tuple[str, ...] | None = None) -> Head:
    """The module's head for ``labels`` (None: its only head).

    Raises:
        PEMError: no head, several heads and no labels to choose by, or none for those labels.
    """
    if labels is not None:
        for head in pem.heads:
            if set(labels) <= set(head.labels):
                return head
    elif len(pem.heads) == 1:
        return pem.heads[0]
    have = "; ".join(",".join(h.labels) for h in pem.heads) or "none"
    raise PEMError(f"{pem.label}: no task head for the classes {labels} (heads: {have}); "
                   "a module trained with the MoCo objective has none: compose it with a classifier")


def predict(pem: PEM, base: Base, head: Head, items: LabelledItems, batch_size: int = 64,
            device: str = "auto") -> np.ndarray:
    """Class probabilities of every item: the head on the features of the merged encoder.

    Shape:
        returns: (N, K) in the order of ``head.labels``
    """
    return predict_with(merged_encoder(pem, base.encoder), head, items, batch_size, device)


def predict_with(encoder: torch.nn.Module, head: Head, items: LabelledItems, batch_size: int = 64,
                 device: str = "auto") -> np.ndarray:
    """Class probabilities of every item: ``head`` on ``encoder``'s pooled features (eval mode).

    Shape:
        returns: (N, K) in the order of ``head.labels``
    """
    features = torch.from_numpy(extract_features(encoder, items.dataset, batch_size=batch_size, device=device))  # (N, F)
    logits = features @ head.weight.T.float() + head.bias.float()  # (N, K)
    return torch.softmax(logits, dim=1).numpy()


def module_proba(pem: PEM, base: Base, items: LabelledItems, *, batch_size: int = 64,
                 device: str = "auto") -> np.ndarray:
    """The probabilities of the module's head for ``items``' classes, in ``items.classes`` order.

    Shape:
        returns: (N, K) with K = len(items.classes)
    """
    head = head_for(pem, items.classes)
    order = [head.labels.index(name) for name in items.classes]
    return predict(pem, base, head, items, batch_size, device)[:, order]


def score(items: LabelledItems, proba: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1 and AUROC of ``proba`` on ``items``, with 95% CIs.

    The bootstrap resamples subjects (:func:`mocomri.eval.bootstrap.bootstrap_metrics`).

    Shape:
        proba: (N, K) in ``items.classes`` order
    """
    point = classification_metrics(items.labels, proba)
    ci = bootstrap_metrics(items.labels, proba, groups=items.subjects, n_boot=n_boot, seed=seed)
    return {m: {"value": point[m], "ci95": list(ci[m])} for m in point} | {"n_items": int(len(items.labels))}


def evaluate(pem: PEM, base: Base, items: LabelledItems, *, n_boot: int = 1000, seed: int = 0,
             batch_size: int = 64, device: str = "auto") -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1 and AUROC of the module's head, with 95% CIs (:func:`score`)."""
    return score(items, module_proba(pem, base, items, batch_size=batch_size, device=device), n_boot=n_boot, seed=seed)


def evaluate_file(module: str | Path, encoder: str | Path, manifest: str | Path, *, split: str = "test",
                  config: Config | None = None, n_boot: int = 1000, device: str = "auto") -> dict[str, Any]:
    """:func:`evaluate` of a module file on a manifest split, with what it was evaluated on."""

    pem = load_pem(module)
    base = load_base(encoder, config)
    head = head_for(pem) if len(pem.heads) == 1 else None
    items = labelled_items(manifest, base.config, split, head.labels if head else None)
    return {"module": str(module), "manifest": str(manifest), "manifest_sha1": file_digest(manifest),
            "split": split, "classes": list(items.classes),
            "metrics": evaluate(pem, base, items, n_boot=n_boot, device=device)}
