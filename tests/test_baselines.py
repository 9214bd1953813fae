"""Baselines: raw-pixel features and the supervised-from-scratch model."""

from __future__ import annotations

import numpy as np
import torch

from mocomri.eval.baselines import SupervisedBudget, predict_supervised, raw_pixel_encoder, train_supervised
from mocomri.models.encoders import create_encoder


def test_raw_pixel_encoder__2d_gives_block_means() -> None:
    x = torch.randn(2, 1, 64, 64)
    out = raw_pixel_encoder(2, side=32)(x)
    expected = x.numpy().reshape(2, 1, 32, 2, 32, 2).mean(axis=(3, 5)).reshape(2, -1)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_raw_pixel_encoder__3d_default_side() -> None:
    assert raw_pixel_encoder(3)(torch.randn(2, 2, 24, 24, 24)).shape == (2, 2 * 12**3)


class _Corners(torch.utils.data.Dataset):
    """Class 0: bright top-left square; class 1: bright bottom-right square."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = np.arange(n) % 2
        self.images = torch.randn(n, 1, 16, 16, generator=g)
        for i, y in enumerate(self.labels):
            corner = slice(0, 8) if y == 0 else slice(8, 16)
            self.images[i, :, corner, corner] += 3.0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "row": i}


def test_train_supervised__learns_an_easy_task_and_augments_every_image() -> None:
    data = _Corners(48, seed=0)
    torch.manual_seed(0)
    backbone, dim = create_encoder("resnet18", in_channels=1, width=8)
    seen = []

    def augment(images: torch.Tensor, indices, seed: int) -> torch.Tensor:
        assert images.shape[0] == len(indices)
        seen.extend(indices)
        return images

    budget = SupervisedBudget(steps=30, batch_size=8, lr=3e-3, warmup_steps=3)
    train = np.arange(32)
    model = train_supervised(backbone, dim, data, train, data.labels[train], 2,
                             augment=augment, budget=budget, device=torch.device("cpu"), seed=0)
    assert len(seen) == 30 * 8 and set(seen) <= set(train.tolist())  # every image, training items only
    proba = predict_supervised(model, data, np.arange(32, 48), batch_size=8, device=torch.device("cpu"))
    assert proba.shape == (16, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert (proba.argmax(axis=1) == data.labels[32:]).mean() >= 0.8


def test_view_augmenter__uses_the_pretraining_view_transform() -> None:
    from mocomri.augment.settings import AugmentConfig
    from mocomri.eval.baselines import view_augmenter

    augment = view_augmenter(AugmentConfig(), ["T1w", "FLAIR"], [0, 0], spatial_dims=2, size=16)
    images = torch.randn(2, 1, 16, 16)
    views = augment(images, [0, 1], 7)
    assert views.shape == (2, 1, 16, 16) and type(views) is torch.Tensor
    assert torch.isfinite(views).all() and not torch.equal(views, images)
    assert abs(float(views[0].mean())) < 1e-4  # z-scored, as the evaluation input
    again = view_augmenter(AugmentConfig(), ["T1w", "FLAIR"], [0, 0], spatial_dims=2, size=16)
    assert torch.equal(again(images, [0, 1], 7), views)  # seeded: the same draw
    assert not torch.equal(augment(images, [0, 1], 8), views)
