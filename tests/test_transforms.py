"""mocomri.data.transforms (the eval transform), the per-item reference views (tests/reference_transforms.py),
and the augment settings they read."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mocomri.config import load_config
from mocomri.augment.settings import FAMILY_DEFAULTS, AugmentConfig, AugmentParams
from mocomri.data.transforms import PadToSquare, build_eval_transform
from mocomri.errors import ConfigError
from tests.reference_transforms import RandResizedCrop, build_view_transform


def _slice(shape=(40, 32), seed=0) -> torch.Tensor:
    """A left-right asymmetric blob on a dark background. Shape: (1, H, W)."""
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, dtype=np.float32)
    image[8:32, 6:26] = 1.0
    image[12:20, 8:12] = 2.0  # asymmetric feature
    return torch.from_numpy(image + 0.01 * rng.standard_normal(shape).astype(np.float32))[None]


def _only(**params) -> AugmentConfig:
    """An AugmentConfig with every random step off except the given parameters."""
    off = {f.name: 0.0 for f in dataclasses.fields(AugmentParams) if f.name.endswith("_prob")}
    base = dataclasses.replace(AugmentParams(), crop_scale=[1.0, 1.0], **{**off, **params})
    return AugmentConfig(base=base)


def test_build_view_transform__two_calls_give_different_views_of_the_right_shape():
    transform = build_view_transform(AugmentConfig(), "T1w", 2, 24, seed=0)
    image = _slice()
    first, second = transform(image), transform(image)
    assert first.shape == second.shape == (1, 24, 24)
    assert first.dtype == torch.float32 and type(first) is torch.Tensor
    assert not torch.equal(first, second)
    assert torch.isfinite(first).all()


def test_build_view_transform__same_seed_reproduces_the_views():
    image = _slice()
    a = build_view_transform(AugmentConfig(), "FLAIR", 2, 24, seed=5)
    b = build_view_transform(AugmentConfig(), "FLAIR", 2, 24, seed=5)
    assert torch.equal(a(image), b(image)) and torch.equal(a(image), b(image))


def test_build_view_transform__flip_is_left_right_only():
    image = _slice((32, 32))
    plain = build_view_transform(_only(), "T1w", 2, 32, seed=0)(image)
    flipped = build_view_transform(_only(flip_prob=1.0), "T1w", 2, 32, flip_axis=1, seed=0)(image)
    assert torch.allclose(flipped, torch.flip(plain, dims=[2]), atol=1e-5)  # spatial axis 1 = W
    no_axis = build_view_transform(_only(flip_prob=1.0), "T1w", 2, 32, flip_axis=None, seed=0)(image)
    assert torch.allclose(no_axis, plain, atol=1e-5)


def test_build_view_transform__intensity_steps_change_intensity_not_geometry():
    image = _slice((32, 32))
    plain = build_view_transform(_only(), "T1w", 2, 32, seed=1)(image)
    noisy = build_view_transform(_only(noise_prob=1.0, bias_field_prob=1.0, gamma_prob=1.0), "T1w", 2, 32, seed=1)(image)
    assert not torch.allclose(noisy, plain, atol=1e-2)
    # Same geometry: the bright feature stays where it was.
    assert np.unravel_index(int(noisy[0].argmax()), (32, 32))[1] < 16 and np.unravel_index(int(plain[0].argmax()), (32, 32))[1] < 16
    assert torch.corrcoef(torch.stack([noisy.flatten(), plain.flatten()]))[0, 1] > 0.8


def test_build_view_transform__3d_views():
    volume = torch.rand(1, 20, 18, 16)
    view = build_view_transform(AugmentConfig(), "T2w", 3, 12, seed=0)(volume)
    assert view.shape == (1, 12, 12, 12)


def test_build_view_transform__one_channel_stays_one_channel():
    view = build_view_transform(AugmentConfig(), "unknown", 2, 16, seed=0)(_slice())
    assert view.shape[0] == 1  # no colour: nothing adds channels


def test_build_eval_transform__deterministic_square_padding_keeps_aspect():
    image = torch.zeros(1, 40, 20)
    image[0, 10:30, 5:15] = 1.0  # a 20 x 10 box
    out = build_eval_transform(2, 40)(image)
    assert torch.equal(out, build_eval_transform(2, 40)(image))
    rows, cols = torch.nonzero(out[0] > out[0].mean(), as_tuple=True)
    height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    assert abs(height / width - 2.0) < 0.25  # not squashed to a square


def test_pad_to_square__pads_with_the_minimum():
    image = torch.full((1, 6, 4), 3.0)
    image[0, 0, 0] = -2.0
    out = PadToSquare()(image)
    assert out.shape == (1, 6, 6) and float(out[0, 0, 5]) == -2.0


def test_rand_resized_crop__box_scale_and_aspect_within_bounds():
    crop = RandResizedCrop(scale=(0.5, 0.8), max_aspect=4 / 3)
    crop.set_random_state(0)
    for _ in range(50):
        h, w = crop(torch.zeros(1, 100, 100)).shape[1:]
        assert 50 * 0.86 - 1 <= min(h, w) and max(h, w) <= min(100, 80 * 1.155 + 1)
        assert max(h, w) / min(h, w) <= 4 / 3 + 0.05


def test_params_for__family_defaults_then_config_overrides():
    cfg = AugmentConfig(families={"flair": {"noise_prob": 0.9}}, modality_families={"T2starw": "dwi"})
    assert cfg.params_for("FLAIR").noise_prob == 0.9
    assert cfg.params_for("FLAIR").noise_std == FAMILY_DEFAULTS["flair"]["noise_std"]
    assert cfg.params_for("T1w") == AugmentParams()
    assert cfg.params_for("T2starw").spike_prob == FAMILY_DEFAULTS["dwi"]["spike_prob"]
    assert cfg.params_for("whatever") == AugmentParams()


def test_augment_config__loads_from_overrides_and_rejects_unknown_keys():
    cfg = load_config(None, ["augment.families.flair.noise_std=0.1", "augment.base.flip_prob=0.0"])
    assert cfg.augment.params_for("FLAIR").noise_std == 0.1
    assert cfg.augment.params_for("T1w").flip_prob == 0.0
    with pytest.raises(ConfigError, match=r"augment\.families\.flair\.noise_level: unknown parameter"):
        load_config(None, ["augment.families.flair.noise_level=0.1"])
    with pytest.raises(ConfigError, match=r"augment\.families\.t9: unknown family"):
        load_config(None, ["augment.families.t9.noise_std=0.1"])
    with pytest.raises(ConfigError, match=r"data\.kind"):
        load_config(None, ["data.kind=voxels"])


def test_build_view_transform__reseeding_in_place_replays_the_views():
    # The pretraining sampler re-seeds one transform per item; a fresh transform with the same
    # seed must draw the same views, and the re-seeded one must not drift from it.
    image = _slice()
    reused = build_view_transform(AugmentConfig(), "T2w", 2, 24, seed=0)
    for seed in (11, 12, 11):
        reused.set_random_state(seed=seed)
        fresh = build_view_transform(AugmentConfig(), "T2w", 2, 24, seed=seed)
        for _ in range(2):
            assert torch.equal(reused(image), fresh(image))
    reused.set_random_state(seed=11)
    first = reused(image)
    reused.set_random_state(seed=12)
    assert not torch.equal(reused(image), first)
