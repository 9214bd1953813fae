"""Each batched artefact against MONAI's single-item transform (or NumPy) at fixed parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import (
    AdjustContrast,
    GibbsNoise,
    KSpaceSpikeNoise,
    NormalizeIntensity,
    RandBiasField,
    RandHistogramShift,
    ScaleIntensity,
)

from mocomri.augment import artefacts

SHAPES = {2: (2, 20, 24), 3: (2, 10, 12, 14)}  # (C, *S): two channels, unequal sides
ODD_SHAPES = {2: (2, 19, 23), 3: (1, 9, 12, 11)}  # odd sides: no Nyquist sample; the spectrum's centre on a sample


def _batch(dims: int, n: int = 3, seed: int = 0, shapes: dict = SHAPES) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *shapes[dims]), generator=g, dtype=torch.float32) + 0.1


def _close(a, b, atol=1e-5, rtol=1e-4):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), atol=atol, rtol=rtol)


@pytest.mark.parametrize("dims", [2, 3])
def test_bias_field__equals_monai_rand_bias_field_at_fixed_coefficients(dims):
    x = _batch(dims)
    n_terms = artefacts.bias_field_size(dims, 3)
    assert n_terms == (10 if dims == 2 else 20)
    coeffs = torch.rand(len(x), n_terms, generator=torch.Generator().manual_seed(1)) * 0.3
    ours = artefacts.bias_field(x, coeffs)
    for i in range(len(x)):
        monai = RandBiasField(degree=3, coeff_range=(0.0, 0.3), prob=1.0)
        monai.randomize(img_size=x.shape[2:])
        monai._coeff = coeffs[i].tolist()
        _close(ours[i], monai(x[i].numpy(), randomize=False))


@pytest.mark.parametrize("shapes", [SHAPES, ODD_SHAPES], ids=["even", "odd"])
@pytest.mark.parametrize("dims", [2, 3])
def test_gibbs_ringing__equals_monai_gibbs_noise(dims, shapes):
    x = _batch(dims, shapes=shapes)
    alpha = torch.tensor([0.0, 0.35, 0.8])
    ours = artefacts.gibbs_ringing(x, alpha)
    for i, a in enumerate(alpha.tolist()):
        _close(ours[i], GibbsNoise(alpha=a)(x[i].clone()))
    _close(ours[0], x[0])  # alpha 0 keeps every frequency


@pytest.mark.parametrize("shapes", [SHAPES, ODD_SHAPES], ids=["even", "odd"])
@pytest.mark.parametrize("dims", [2, 3])
def test_kspace_spike__equals_monai_kspace_spike_noise(dims, shapes):
    x = _batch(dims, shapes=shapes)
    g = torch.Generator().manual_seed(2)
    sides = torch.tensor(x.shape[2:])
    location = (torch.rand(len(x), x.shape[1], dims, generator=g) * sides).long()
    log_intensity = 8 + 4 * torch.rand(len(x), x.shape[1], generator=g)
    ours = artefacts.kspace_spike(x, location, log_intensity)
    for i in range(len(x)):
        locs = [(c, *location[i, c].tolist()) for c in range(x.shape[1])]
        monai = KSpaceSpikeNoise(locs, log_intensity[i].tolist())(x[i].clone())
        _close(ours[i], monai, atol=1e-4)
    assert not torch.allclose(ours, x, atol=1e-2)


@pytest.mark.parametrize("shapes", [SHAPES, ODD_SHAPES], ids=["even", "odd"])
@pytest.mark.parametrize("dims", [2, 3])
def test_kspace_log_magnitude_mean__matches_numpy(dims, shapes):
    x = _batch(dims, shapes=shapes)
    axes = tuple(range(2, 2 + dims))
    k = np.fft.fftn(x.numpy().astype(np.float64), axes=axes)
    _close(artefacts.kspace_log_magnitude_mean(x), np.log(np.abs(k) + 1e-10).mean(axis=axes), rtol=1e-4)


def test_rician_noise__equals_the_magnitude_of_complex_gaussian_noise():
    x = _batch(2)
    std = torch.tensor([0.0, 0.05, 0.2])
    noise = torch.randn(2, *x.shape, generator=torch.Generator().manual_seed(3))
    ours = artefacts.rician_noise(x, std, noise)
    s = std.numpy()[:, None, None, None]
    reference = np.sqrt((x.numpy() + s * noise[0].numpy()) ** 2 + (s * noise[1].numpy()) ** 2)
    _close(ours, reference)
    _close(ours[0], x[0])  # zero std: the (positive) image itself


@pytest.mark.parametrize("dims", [2, 3])
def test_adjust_contrast__equals_monai_adjust_contrast(dims):
    x = _batch(dims)
    gamma = torch.tensor([0.7, 1.0, 1.5])
    ours = artefacts.adjust_contrast(x, gamma)
    for i, gm in enumerate(gamma.tolist()):
        _close(ours[i], AdjustContrast(gamma=gm)(x[i].clone()))


@pytest.mark.parametrize("dims", [2, 3])
def test_histogram_shift__equals_monai_rand_histogram_shift(dims):
    x = _batch(dims)
    monai = RandHistogramShift(num_control_points=6, prob=1.0)
    monai.set_random_state(seed=4)
    floating = []
    for i in range(len(x)):
        monai.randomize()
        floating.append(torch.as_tensor(monai.floating_control_points, dtype=torch.float32))
        expected = monai(x[i].clone(), randomize=False)
        floating_i = torch.stack(floating)[i : i + 1]
        _close(artefacts.histogram_shift(x[i : i + 1], floating_i)[0], expected)
    ours = artefacts.histogram_shift(x, torch.stack(floating))
    assert ours.shape == x.shape
    identity = artefacts.histogram_shift(x, torch.linspace(0, 1, 6).repeat(len(x), 1))
    _close(identity, x)


def test_histogram_shift__constant_item_is_unchanged():
    x = torch.full((1, 1, 5, 5), 3.0)
    assert torch.equal(artefacts.histogram_shift(x, torch.tensor([[0.0, 0.9, 1.0]])), x)


@pytest.mark.parametrize("dims", [2, 3])
def test_rescale01_and_normalize__equal_monai_per_item(dims):
    x = _batch(dims) * 5 - 2
    scaled, normalised = artefacts.rescale01(x), artefacts.normalize(x)
    for i in range(len(x)):
        _close(scaled[i], ScaleIntensity(minv=0.0, maxv=1.0)(x[i].clone()))
        _close(normalised[i], NormalizeIntensity()(x[i].clone()), atol=1e-4)
    constant = torch.full((1, 1, 4, 4), 2.0)
    assert torch.equal(artefacts.rescale01(constant), torch.zeros_like(constant))
    assert torch.equal(artefacts.normalize(constant), torch.zeros_like(constant))
