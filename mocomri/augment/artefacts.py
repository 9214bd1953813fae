"""MRI intensity artefacts on whole batches, each item with its own parameters.

Each function is the batched form of one MONAI transform, which stays its reference definition
(``tests/test_augment_artefacts.py`` checks every one against it at fixed parameters):

==========================  ================================================
function                    MONAI reference (per item)
==========================  ================================================
:func:`rescale01`           ``ScaleIntensity(minv=0, maxv=1)``
:func:`bias_field`          ``RandBiasField`` (Legendre polynomial field)
:func:`gibbs_ringing`       ``GibbsNoise(alpha)``
:func:`kspace_spike`        ``KSpaceSpikeNoise(loc, k_intensity)``
:func:`rician_noise`        ``RandRicianNoise`` (noise given)
:func:`adjust_contrast`     ``AdjustContrast(gamma)``
:func:`histogram_shift`     ``RandHistogramShift`` (control points given)
:func:`normalize`           ``NormalizeIntensity()``
==========================  ================================================

MONAI's versions take one item and draw their parameters from NumPy; they are written per
item (Python loops over channels and control points, NumPy fields moved to the tensor's
device). These take the parameters as tensors and run the batch at once on any device, so
the random draws (:mod:`mocomri.augment.views`) and the arithmetic stay apart.

Shape: every ``x`` is (B, C, *S) with S the 2 or 3 spatial sides; statistics such as the min,
max, mean and std are per item, over all its channels (MONAI's ``channel_wise=False``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


def _per_item(stat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1), broadcastable against ``x``."""
    return stat.view(-1, *([1] * (x.dim() - 1)))


def rescale01(x: torch.Tensor) -> torch.Tensor:
    """Min-max rescales each item to [0, 1]; a constant item becomes 0 (as MONAI's ``rescale_array``)."""
    flat = x.flatten(1)
    lo, hi = flat.amin(1), flat.amax(1)
    span = hi - lo
    scale = torch.where(span > 0, 1.0 / span.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(span))
    return (x - _per_item(lo, x)) * _per_item(scale, x)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Z-scores each item over all its values (population std; a zero std divides by 1)."""
    flat = x.flatten(1)
    # Mean and mean square as two plain reductions, much faster on the CPU than torch.std_mean
    # (BENCHMARKS.md). They stay in x's dtype: asking for float64 sums would first copy the whole
    # view to float64, and PyTorch's cascade summation keeps float32 sums accurate to ~1e-7 relative,
    # which leaves the std of a view (mean and std of the same order) exact to ~1e-6.
    n = flat.shape[1]
    mean = flat.mean(1).double()
    var = (torch.linalg.vector_norm(flat, 2, dim=1).double().square() / n - mean * mean).clamp_min(0)
    std = var.sqrt()
    std = torch.where(std > 1e-6 * mean.abs().clamp_min(1e-12), std, torch.ones_like(std))
    scale = 1.0 / std
    return torch.addcmul(_per_item((-mean * scale).to(x.dtype), x), x, _per_item(scale.to(x.dtype), x))  # one pass


def bias_field_terms(spatial_dims: int, degree: int) -> list[tuple[int, ...]]:
    """The Legendre degrees ``(i, j[, k])`` of each coefficient, in MONAI's order.

    2D: the lower triangle of the (degree+1)² coefficient matrix, row by row
    (``np.tril_indices``); 3D: every ``i + j + k <= degree`` in lexicographic order.
    """
    if spatial_dims == 2:
        return [(i, j) for i in range(degree + 1) for j in range(i + 1)]
    if spatial_dims == 3:
        return [(i, j, k) for i in range(degree + 1) for j in range(degree + 1 - i) for k in range(degree + 1 - i - j)]
    raise ValueError(f"spatial_dims={spatial_dims} must be 2 or 3")


def bias_field_size(spatial_dims: int, degree: int) -> int:
    """How many coefficients a field of this degree has (10 in 2D and 20 in 3D at degree 3)."""
    return len(bias_field_terms(spatial_dims, degree))


def _legendre(n: int, degree: int, device: torch.device) -> torch.Tensor:
    """Legendre polynomials P_0..P_degree on ``n`` points spaced evenly over [-1, 1]. Shape: (degree+1, n)."""
    t = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    polys = [torch.ones_like(t), t]
    for d in range(1, degree):  # Bonnet's recursion: (d+1) P_{d+1} = (2d+1) t P_d - d P_{d-1}
        polys.append(((2 * d + 1) * t * polys[d] - d * polys[d - 1]) / (d + 1))
    return torch.stack(polys[: degree + 1]).to(device)


@lru_cache(maxsize=16)
def _bias_basis(shape: tuple[int, ...], degree: int, device: torch.device) -> torch.Tensor:
    """Every term's product of per-axis polynomials on the grid. Shape: (T, *shape) float32."""
    per_axis = [_legendre(n, degree, device) for n in shape]
    terms = []
    for degrees in bias_field_terms(len(shape), degree):
        term = per_axis[0][degrees[0]]
        for axis in range(1, len(shape)):
            term = term.unsqueeze(-1) * per_axis[axis][degrees[axis]]
        terms.append(term)
    return torch.stack(terms).float()


def bias_field(x: torch.Tensor, coeffs: torch.Tensor, degree: int = 3) -> torch.Tensor:
    """Multiplies each item by ``exp`` of a smooth polynomial field, the same for all its channels.

    Args:
        x: images. Shape: (B, C, *S).
        coeffs: the field's Legendre coefficients per item, in :func:`bias_field_terms` order.
            Shape: (B, T).
        degree: the polynomial degree (MONAI's default 3).
    """
    basis = _bias_basis(tuple(x.shape[2:]), degree, x.device)  # (T, *S)
    field = torch.tensordot(coeffs.to(x.dtype), basis, dims=1)  # (B, *S)
    return x * field.exp().unsqueeze(1)


def _spatial(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.dim()))


def _unshift_index(index: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Indices into a centre-shifted spectrum (``fftshift``) -> the same samples in FFT order. index: (..., d)."""
    sides = torch.tensor(shape, device=index.device)
    return (index - sides // 2) % sides


@lru_cache(maxsize=16)
def _half_distances(shape: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's distance from the centre of the shifted spectrum ((n - 1) / 2 per axis) at k
    and at -k, on the half spectrum ``rfftn`` keeps (FFT order, last axis cut to n // 2 + 1).

    For an even side the centre lies half a sample off zero frequency, so MONAI's ball is not
    symmetric under k -> -k; both distances are needed to symmetrise it (:func:`gibbs_ringing`).
    """
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) - (n - 1) / 2 for n in shape], indexing="ij")
    dist = torch.fft.ifftshift(torch.sqrt(sum(a**2 for a in axes)))  # FFT order, full spectrum
    axes_ = tuple(range(len(shape)))
    mirrored = dist.flip(axes_).roll((1,) * len(shape), axes_)  # index i -> (-i) mod n
    half = shape[-1] // 2 + 1
    return dist[..., :half].to(device), mirrored[..., :half].to(device)


def gibbs_ringing(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Truncates k-space to a centred ball, which rings at edges (MONAI ``GibbsNoise``).

    MONAI takes the real part of the inverse FFT of the masked spectrum. For a real image that
    equals the inverse real FFT with the mask averaged with its mirror (1/2 where only one of k
    and -k is inside the ball), so this runs on the half spectrum: half the FFT work.

    Args:
        x: images. Shape: (B, C, *S).
        alpha: per item, in [0, 1]: 0 keeps the corners of k-space (no change), 1 keeps nothing
            but the centre. The ball's radius is ``(1 - alpha) * max(S) * sqrt(2) / 2``. Shape: (B,).
    """
    shape = tuple(x.shape[2:])
    radius = (1.0 - alpha.double()) * max(shape) * math.sqrt(2) / 2  # (B,)
    dist, mirrored = _half_distances(shape, x.device)
    r = radius.to(x.device).view(-1, *([1] * len(shape)))
    mask = ((dist <= r).to(x.dtype) + (mirrored <= r).to(x.dtype)) * 0.5  # (B, *S_half)
    k = torch.fft.rfftn(x, dim=_spatial(x)) * mask.unsqueeze(1)
    return torch.fft.irfftn(k, s=shape, dim=_spatial(x)).to(x.dtype)


def kspace_log_magnitude_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``log(|k| + 1e-10)`` per item and channel, MONAI's scale for spike intensities. Shape: (B, C).

    Computed on the half spectrum: |k| = |-k| for a real image, so every column the real FFT
    drops is the mirror of one it keeps (all but the zero and, for an even side, the Nyquist column).
    """
    n = x.shape[-1]
    log_magnitude = torch.log(torch.fft.rfftn(x, dim=_spatial(x)).abs() + 1e-10)  # (B, C, ..., n // 2 + 1)
    weights = torch.full((n // 2 + 1,), 2.0, dtype=log_magnitude.dtype, device=x.device)
    weights[0] = 1.0
    if n % 2 == 0:
        weights[-1] = 1.0
    return (log_magnitude * weights).flatten(2).sum(2) / x[0, 0].numel()


def kspace_spike(x: torch.Tensor, location: torch.Tensor, log_intensity: torch.Tensor) -> torch.Tensor:
    """Sets one k-space sample per item and channel to a large magnitude, keeping its phase.

    A spike in k-space is a stripe pattern over the whole image (MONAI ``KSpaceSpikeNoise``:
    the real part of the inverse FFT of the changed spectrum). Changing one sample k0 from X to
    s adds ``Re((s - X) e^{2πi k0·n/N}) / N`` to the image, one plane wave, and X is one DFT
    coefficient: both are sums of separable per-axis waves, so no FFT of the volume is needed.

    Args:
        x: images. Shape: (B, C, *S).
        location: the spike's index in the (centre-shifted) k-space of each channel. Shape: (B, C, len(S)) int.
        log_intensity: the spike's log-magnitude. Shape: (B, C).
    """
    b, c, *shape = x.shape
    index = _unshift_index(location.to(x.device), tuple(shape))  # (B, C, d), FFT order
    # Phases reduced mod N_a and in double precision: the spike is 10^4-10^5 times the image's
    # values, so float32 phases of large angles would leave errors of 1e-3 in the image.
    angles = [(2 * math.pi / n) * ((index[..., a, None] * torch.arange(n, device=x.device)) % n).double()
              for a, n in enumerate(shape)]  # (B, C, N_a) per axis
    waves = [torch.polar(torch.ones_like(t), t) for t in angles]  # e^{2πi k_a n / N_a}, complex128
    # X(k0) = sum x e^{-2πi k0·n/N}: the last axis by a real matrix-vector product (the only pass
    # over the whole volume), then the remaining axes on the much smaller complex partial sums.
    rows = x.double().reshape(b, c, -1, shape[-1])  # (B, C, M, N_last)
    cos, sin = angles[-1].cos().unsqueeze(-1), angles[-1].sin().unsqueeze(-1)
    coefficient = torch.complex((rows @ cos).squeeze(-1), -(rows @ sin).squeeze(-1)).reshape(b, c, *shape[:-1])
    for wave in reversed(waves[:-1]):
        coefficient = (coefficient * wave.conj().view(b, c, *[1] * (coefficient.dim() - 3), -1)).sum(-1)
    spike = torch.polar(log_intensity.to(x.device, torch.float64).exp(), coefficient.angle())  # (B, C)
    pattern = (spike - coefficient) / math.prod(shape)  # (B, C), then the outer product over all but the last axis
    for wave in waves[:-1]:
        pattern = pattern.unsqueeze(-1) * wave.view(b, c, *[1] * (pattern.dim() - 2), -1)
    # Re(pattern · e^{iθ_last}) over the last axis, in the image's precision (the phases are already exact).
    last = [t.to(x.dtype).view(b, c, *[1] * (len(shape) - 1), -1) for t in (angles[-1].cos(), angles[-1].sin())]
    stripes = pattern.real.to(x.dtype).unsqueeze(-1) * last[0] - pattern.imag.to(x.dtype).unsqueeze(-1) * last[1]
    return x + stripes


def rician_noise(x: torch.Tensor, std: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The magnitude of the image plus complex Gaussian noise: ``sqrt((x + s·n1)² + (s·n2)²)``.

    Args:
        x: images. Shape: (B, C, *S).
        std: the noise's standard deviation per item. Shape: (B,).
        noise: standard normal draws, the real and imaginary parts. Shape: (2, B, C, *S).
    """
    s = _per_item(std.to(x.device, x.dtype), x)
    return torch.sqrt((x + s * noise[0]) ** 2 + (s * noise[1]) ** 2)


def adjust_contrast(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Gamma on the item's own [min, max] range (MONAI ``AdjustContrast``). gamma: (B,)."""
    flat = x.flatten(1)
    lo = _per_item(flat.amin(1), x)
    span = _per_item(flat.amax(1), x) - lo
    g = _per_item(gamma.to(x.device, x.dtype), x)
    return ((x - lo) / (span + 1e-7)).clamp_min(0) ** g * span + lo


def histogram_shift(x: torch.Tensor, floating: torch.Tensor) -> torch.Tensor:
    """Maps intensities through a monotone piecewise-linear curve (MONAI ``RandHistogramShift``).

    The curve takes ``n`` evenly spaced control points of the item's [min, max] range to
    ``floating`` (in the same [0, 1] units). A constant item is returned unchanged.

    Args:
        x: images. Shape: (B, C, *S).
        floating: where each control point goes; starts at 0 and ends at 1. Shape: (B, n).
    """
    n = floating.shape[1]
    flat = x.flatten(1)  # (B, N)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    span = hi - lo
    t = (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)) * (n - 1)  # in control-point units
    # The curve as a sum of ramps, one per segment: f(t) = f_0 + sum_i (f_{i+1} - f_i) clamp(t - i, 0, 1),
    # the same piecewise-linear interpolation as looking up each value's segment, without the two
    # gathers per value, which on the CPU cost ten times these n - 1 elementwise passes.
    fp = floating.to(x.device, x.dtype)
    slopes = (fp[:, 1:] - fp[:, :-1]) * span  # (B, n - 1), already in intensity units
    mapped = (fp[:, :1] * span + lo).expand_as(flat).clone()
    for i in range(n - 1):
        mapped.addcmul_((t - i).clamp_(0, 1), slopes[:, i : i + 1])
    return torch.where(span > 0, mapped, flat).view_as(x)
