"""Baselines a pretrained encoder is compared with: intensity statistics, raw pixels, and
supervised from scratch.

- Intensity statistics: each image's mean, standard deviation and percentiles, per channel;
  the linear probe then runs on them. It tells whether the label can be read from the
  histogram of an image alone, with no spatial information at all.
- Raw pixels: each image average-pooled to a small grid and flattened; the linear probe then
  runs on its principal components (see :func:`mocomri.eval.probe.fit_linear_probe`). It tells
  whether an encoder adds anything beyond intensity statistics.
- Supervised from scratch: the same architecture, randomly initialised, trained end to end with
  a linear head on the same labelled fraction, with the same augmentations as pretraining
  (:class:`mocomri.augment.BatchViews` applied to batches of the evaluation input) and a fixed step budget (AdamW,
  warm-up + cosine). It tells whether pretraining beats simply training on the labels one has.
  The same training started from the pretrained weights is fine-tuning (``mocomri probe
  --finetune``), reported paired with this one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from mocomri.augment import BatchViews
from mocomri.train.finetune import Augment, choice_batches, fine_tune_ce
from mocomri.train.lr_schedule import warmup_cosine_lr


def raw_pixel_encoder(spatial_dims: int, side: int | None = None) -> nn.Module:
    """Average-pools to ``side`` per axis and flattens (32 in 2D, 12 in 3D by default).

    Shape:
        input: (B, C, H, W) or (B, C, D, H, W)  output: (B, C * side**spatial_dims)
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims={spatial_dims} must be 2 or 3")
    side = side or (32 if spatial_dims == 2 else 12)
    pool = nn.AdaptiveAvgPool2d(side) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(side)
    return nn.Sequential(pool, nn.Flatten(1))


INTENSITY_PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)


class IntensityStatistics(nn.Module):
    """Global intensity statistics of each channel of an image: mean, std and percentiles.

    The statistics of the evaluation input, which is z-scored per image: there the mean and the
    standard deviation are 0 and 1 by construction and the percentiles carry the shape of the
    histogram. Percentiles interpolate linearly between order statistics (NumPy's default).

    Args:
        percentiles: in [0, 100].

    Shape:
        input: (B, C, H, W) or (B, C, D, H, W)  output: (B, C * (2 + P)), per channel
        ``[mean, std, *percentiles]``.
    """
    def __init__(self, percentiles: Sequence[float] = INTENSITY_PERCENTILES) -> None:
        super().__init__()
        if not all(0 <= p <= 100 for p in percentiles):
            raise ValueError(f"percentiles {tuple(percentiles)} must lie in [0, 100]")
        self.register_buffer("fractions", torch.tensor([p / 100 for p in percentiles], dtype=torch.float32),
                             persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(2).float()  # (B, C, N)
        ordered = flat.sort(dim=2).values
        # torch.quantile refuses inputs over 2**24 values (a batch of 3D patches); the same
        # linear interpolation by hand has no limit.
        position = self.fractions * (flat.shape[2] - 1)  # (P,)
        low = position.floor().long()
        high = torch.clamp(low + 1, max=flat.shape[2] - 1)
        weight = position - low  # (P,)
        percentiles = ordered[..., low] * (1 - weight) + ordered[..., high] * weight  # (B, C, P)
        mean = flat.mean(dim=2, keepdim=True)  # (B, C, 1)
        std = flat.std(dim=2, correction=0, keepdim=True)  # (B, C, 1)
        return torch.cat([mean, std, percentiles], dim=2).flatten(1)  # (B, C * (2 + P))


def view_augmenter(
    aug_cfg: object,
    modalities: Sequence[str],
    flip_axes: Sequence[int],
    spatial_dims: int,
    size: int,
) -> Augment:
    """The pretraining view transform, applied to batches of evaluation inputs.

    Args:
        aug_cfg: the augment config (``AugmentConfig``).
        modalities: the modality of every dataset item (``EvalDataset.item_modalities``).
        flip_axes: the spatial axis of every item running left-right, -1 where none
            (``EvalDataset.flip_axes``, see ``mocomri.data.datasets.lr_axis``).
        spatial_dims: 2 or 3.
        size: the side of the augmented image (the evaluation input's side).

    Returns:
        ``augment(images, indices, seed)``: one view of each image by
        :class:`mocomri.augment.BatchViews`, its parameters drawn from ``seed``.
    """
    families = sorted({aug_cfg.family_of(m) for m in modalities})
    family_id = {f: i for i, f in enumerate(families)}
    item_family = torch.tensor([family_id[aug_cfg.family_of(m)] for m in modalities], dtype=torch.int64)  # (N,)
    item_flip = torch.as_tensor(np.asarray(flip_axes), dtype=torch.int64)  # (N,)
    make = BatchViews(aug_cfg, families, (size,) * spatial_dims)

    def augment(images: torch.Tensor, indices: Sequence[int], seed: int) -> torch.Tensor:
        index = torch.as_tensor(list(indices), dtype=torch.int64)
        g = torch.Generator().manual_seed(seed)
        gd = torch.Generator(device=images.device).manual_seed(seed)
        with torch.no_grad():
            return make.view(images.float(), item_family[index], item_flip[index], g, gd)

    return augment


@dataclass
class SupervisedBudget:
    """The fixed training budget of the supervised baseline (small enough for a CPU)."""

    steps: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20


def train_supervised(
    backbone: nn.Module,
    feature_dim: int,
    dataset: Dataset,
    indices: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    augment: Augment | None,
    budget: SupervisedBudget,
    device: torch.device,
    seed: int = 0,
) -> nn.Module:
    """Trains ``backbone`` + a linear head with cross-entropy on ``dataset[indices]``.

    The fine-tuning loop (:func:`mocomri.train.finetune.fine_tune_ce`) with every weight trained,
    batches drawn by :func:`~mocomri.train.finetune.choice_batches`, a warm-up + cosine learning
    rate and a random head.

    Args:
        backbone: an encoder returning pooled features, freshly initialised (supervised from
            scratch) or pretrained (fine-tuning); trained in place.
        feature_dim: F, the backbone's output width.
        dataset: items are dicts with an ``"image"`` tensor.
        indices: the labelled items to train on.
        labels: the class of each of ``indices``.
        n_classes: K.
        augment: ``(images, dataset indices, seed) -> images`` (:func:`view_augmenter`), or None.
        budget: steps, batch size and optimiser settings.
        device: where to train.
        seed: seeds batch sampling and augmentation.

    Returns:
        ``nn.Sequential(backbone, head)`` in eval mode.

    Shape:
        image: (C, H, W) or (C, D, H, W)  model output: (B, K)
    """
    torch.manual_seed(seed)  # the head's initialisation
    model = nn.Sequential(backbone, nn.Linear(feature_dim, n_classes)).to(device)
    # At least two images per batch: batch norm needs more than one value per channel.
    batches = choice_batches(dataset, indices, labels, max(2, budget.batch_size), seed)
    schedule = functools.partial(warmup_cosine_lr, total_steps=budget.steps, warmup_steps=budget.warmup_steps,
                                 peak_lr=budget.lr)
    fine_tune_ce(backbone, model[1], list(backbone.parameters()), batches, steps=budget.steps, lr=schedule,
                 weight_decay=budget.weight_decay, device=device, augment=augment, seed=seed)
    return model.eval()


def predict_supervised(
    model: nn.Module, dataset: Dataset, indices: np.ndarray, *, batch_size: int, device: torch.device
) -> np.ndarray:
    """Softmax class probabilities for ``dataset[indices]``, without augmentation.

    Shape:
        returns: (len(indices), K)
    """
    loader = DataLoader(Subset(dataset, [int(i) for i in indices]), batch_size=batch_size)
    chunks = []
    with torch.inference_mode():
        for batch in loader:
            logits = model(batch["image"].to(device))  # (B, K)
            chunks.append(logits.softmax(dim=1).float().cpu().numpy())
    return np.concatenate(chunks)
