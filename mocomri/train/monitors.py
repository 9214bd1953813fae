"""Online health signals of contrastive training: alignment, uniformity, collapse, kNN accuracy."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def alignment(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """E‖q − k‖² over positive pairs (Wang & Isola, arXiv:2005.10242); lower is better.

    Shape:
        q, k: (B, C), L2-normalised.
    """
    return (q.float() - k.float()).pow(2).sum(dim=1).mean()


@torch.no_grad()
def uniformity(z: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """log E exp(−t‖z_i − z_j‖²) over distinct pairs (Wang & Isola); lower is more uniform.

    Shape:
        z: (B, C), L2-normalised.
    """
    sq = torch.pdist(z.float(), p=2).pow(2)
    return sq.mul(-t).exp().mean().log()


@torch.no_grad()
def embedding_spread(z: torch.Tensor) -> torch.Tensor:
    """Per-dimension std of normalised embeddings, times sqrt(C).

    About 1 for embeddings spread over the sphere, 0 when every embedding is the same vector
    (collapse); the SimSiam paper's collapse monitor (arXiv:2011.10566).

    Shape:
        z: (B, C), L2-normalised.
    """
    return z.float().std(dim=0).mean() * math.sqrt(z.shape[1])


def knn_accuracy(
    train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray, test_labels: np.ndarray, k: int = 20
) -> float:
    """Accuracy of a cosine kNN classifier (majority vote of the k nearest training features)."""
    from sklearn.neighbors import KNeighborsClassifier

    k = max(1, min(k, len(train_feats)))
    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="distance")
    clf.fit(train_feats, train_labels)
    return float((clf.predict(test_feats) == test_labels).mean())


@torch.no_grad()
def extract_features(
    backbone: torch.nn.Module, loader, device: torch.device, autocast
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled backbone features for every item of ``loader`` (items carry ``image`` and ``row``).

    Returns:
        (features (N, F) float32, rows (N,) int64).
    """
    was_training = backbone.training
    backbone.eval()
    feats, rows = [], []
    for batch in loader:
        with autocast():
            f = backbone(batch["image"].to(device, non_blocking=True))
        feats.append(F.normalize(f.float(), dim=1).cpu())
        rows.append(torch.as_tensor(batch["row"]))
    backbone.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(rows).numpy()
