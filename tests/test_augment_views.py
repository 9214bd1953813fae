"""BatchViews: per-family strengths in one batch, left-right flips only, seeding, presets, 3D."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mocomri.augment import BatchViews
from mocomri.augment.settings import AugmentConfig, AugmentParams

OFF = dict(rotate_deg=0.0, scale=0.0, affine_prob=0.0, elastic_prob=0.0, flip_prob=0.0, bias_field_prob=0.0,
           gamma_prob=0.0, gibbs_prob=0.0, spike_prob=0.0, noise_prob=0.0, histogram_shift_prob=0.0,
           crop_scale=[1.0, 1.0], crop_aspect=1.0)


def _quiet(**families) -> AugmentConfig:
    """Every augmentation off in ``base`` (whole-image crops); ``families`` switch some back on."""
    cfg = AugmentConfig(base=AugmentParams(**OFF), families={k: v for k, v in families.items()})
    cfg.validate()
    return cfg


def _zscore(x: torch.Tensor) -> torch.Tensor:
    std, mean = torch.std_mean(x.flatten(1), 1, correction=0)
    return (x - mean.view(-1, 1, 1, 1)) / std.view(-1, 1, 1, 1)


def _images(n=4, side=32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.avg_pool2d(torch.rand(n, 1, side + 3, side + 3, generator=g), 4, stride=1)  # smooth, (n, 1, side, side)


def test_batch_views__shapes_dtype_and_two_different_views():
    views = BatchViews(AugmentConfig(), ["t1", "flair"], (24, 24))
    images = _images().half()
    a, b = views(images, torch.tensor([0, 1, 0, 1]), torch.tensor([1, 1, -1, 0]), seed=3)
    assert a.shape == b.shape == (4, 1, 24, 24) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and not torch.equal(a, b)
    torch.testing.assert_close(a.flatten(1).mean(1), torch.zeros(4), atol=1e-5, rtol=0)  # z-scored views


def test_batch_views__a_pure_function_of_the_seed():
    views = BatchViews(AugmentConfig(), ["t1"], (16, 16))
    images, fam, flip = _images(), torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    first = views(images, fam, flip, seed=11)
    again = views(images, fam, flip, seed=11)
    other = views(images, fam, flip, seed=12)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_batch_views__all_off_is_the_whole_image_resized_and_zscored():
    images = _images(side=32)
    a, _ = BatchViews(_quiet(), ["t1"], (32, 32))(images, torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long), 0)
    torch.testing.assert_close(a, _zscore(images), atol=1e-4, rtol=0)


def test_batch_views__flip_is_left_right_only_on_each_items_axis():
    cfg = _quiet(t1={"flip_prob": 1.0})
    images = _images(n=3, side=20)
    flip_axis = torch.tensor([0, 1, -1])
    a, b = BatchViews(cfg, ["t1"], (20, 20))(images, torch.zeros(3, dtype=torch.long), flip_axis, 5)
    expected = _zscore(torch.stack([images[0].flip(1), images[1].flip(2), images[2]]))
    for view in (a, b):
        torch.testing.assert_close(view, expected, atol=1e-4, rtol=0)


def test_batch_views__each_family_gets_its_own_strengths_in_a_mixed_batch():
    cfg = _quiet(flair={"noise_prob": 1.0, "noise_std": 0.5})
    images = _images(n=6)
    family = torch.tensor([0, 1, 0, 1, 0, 1])  # families[0] = "flair" (noisy), families[1] = "t1" (untouched)
    a, _ = BatchViews(cfg, ["flair", "t1"], (32, 32))(images, family, torch.zeros(6, dtype=torch.long), 1)
    clean = _zscore(images)
    for i in range(6):
        error = float((a[i] - clean[i]).abs().mean())
        assert (error > 0.05) if family[i] == 0 else (error < 1e-4), (i, error)


def test_batch_views__crop_preset_changes_geometry_not_intensity_artefacts():
    cfg = AugmentConfig(preset="crop", base=AugmentParams(crop_scale=[0.5, 0.5], flip_prob=0.0, noise_prob=1.0))
    image = torch.ones(1, 1, 32, 32)
    image[..., 8:24, 8:24] = 2.0  # a square: any centred half-side crop shows its edge, never noise
    a, _ = BatchViews(cfg, ["t1"], (16, 16))(image, torch.zeros(1, dtype=torch.long), torch.ones(1, dtype=torch.long), 0)
    assert len(torch.unique(a.round(decimals=3))) <= 8  # bilinear edges only, no noise


def test_batch_views__3d_with_elastic_and_every_artefact():
    base = AugmentParams(elastic_prob=1.0, bias_field_prob=1.0, gibbs_prob=1.0, spike_prob=1.0, noise_prob=1.0,
                         gamma_prob=1.0, histogram_shift_prob=1.0, affine_prob=1.0)
    views = BatchViews(AugmentConfig(base=base), ["t1"], (12, 12, 12))
    volumes = torch.rand(2, 2, 18, 18, 18)
    a, b = views(volumes, torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 9)
    assert a.shape == (2, 2, 12, 12, 12) and torch.isfinite(a).all() and torch.isfinite(b).all()
    assert not torch.equal(a, b)


def test_batch_views__spike_intensity_from_the_config():
    base = AugmentParams(**{**OFF, "spike_prob": 1.0, "spike_intensity": [30.0, 30.0]})
    images = _images(n=2)
    a, _ = BatchViews(AugmentConfig(base=base), ["t1"], (32, 32))(images, torch.zeros(2, dtype=torch.long),
                                                                   torch.ones(2, dtype=torch.long), 2)
    # exp(30) dwarfs the image: what is left after z-scoring is a pure stripe pattern
    spectrum = torch.fft.fft2(a[:, 0]).abs().flatten(1)
    assert ((spectrum > spectrum.amax(1, keepdim=True) * 0.5).sum(1) <= 2).all()  # one frequency and its mirror


def _window_offsets(view: torch.Tensor, image: torch.Tensor) -> tuple[int, int]:
    """Where in ``image`` (1, H, W) the z-scored ``view`` (1, h, w) is a z-scored window: brute force."""
    h, w = view.shape[1:]
    windows = image.unfold(1, h, 1).unfold(2, w, 1)[0]  # (H-h+1, W-w+1, h, w)
    windows = _zscore(windows.reshape(-1, 1, h, w)).reshape(windows.shape)
    error = (windows - view[0]).abs().amax((2, 3))
    i, j = divmod(int(error.argmin()), error.shape[1])
    assert float(error[i, j]) < 1e-4, "the view is not a window of the image"
    return i, j


def test_batch_views__pair_shift_makes_overlapping_patches_within_the_shift():
    # Noise images: every 12-pixel window is unique, so each view's place is found exactly.
    images = torch.rand(16, 1, 40, 40, generator=torch.Generator().manual_seed(0))
    crop = dict(OFF, crop_scale=[0.3, 0.3])  # 12-pixel boxes, read as they are into 12-pixel views
    family, flip = torch.zeros(16, dtype=torch.long), torch.full((16,), -1)
    for pair_shift, most in ((0.0, 0), (0.25, 3 + 1), (None, 40)):  # + 1: boxes snap to whole pixels
        cfg = AugmentConfig(preset="crop", base=AugmentParams(**crop), pair_shift=pair_shift)
        a, b = BatchViews(cfg, ["t1"], (12, 12))(images, family, flip, seed=2)
        shifts = []
        for k in range(16):
            (i1, j1), (i2, j2) = _window_offsets(a[k], images[k]), _window_offsets(b[k], images[k])
            shifts.append(max(abs(i1 - i2), abs(j1 - j2)))
        assert max(shifts) <= most, (pair_shift, shifts)
        if pair_shift != 0.0:
            assert max(shifts) > 0, pair_shift
        if pair_shift is None:  # independent crops: anywhere in the image
            assert max(shifts) > most // 4, shifts
