"""Config section of the augment layer: modality-aware strengths and probabilities of the views.

``AugmentConfig`` is the ``augment:`` section of a ``configs/*.yaml`` file (see
:mod:`mocomri.config`); ``AugmentParams`` holds one modality family's settings. Every field is
typed and has a default, so a config only names what it changes, e.g.
``augment.families.flair.noise_prob=0.5``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mocomri import validation as check
from mocomri.errors import ConfigError


@dataclass
class AugmentParams:
    """Strengths and probabilities of every augmentation, for one modality family.

    Intensities are applied to the view rescaled to [0, 1] (see :mod:`mocomri.augment`).
    """

    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # side of the random crop, fraction of the image
    crop_aspect: float = 4 / 3  # the crop box's sides differ by at most this factor (1: square boxes)
    rotate_deg: float = 10.0  # in-plane rotation range, +/- degrees
    scale: float = 0.1  # isotropic zoom range, +/- fraction
    affine_prob: float = 0.5
    elastic_prob: float = 0.0  # optional: off unless a config turns it on
    elastic_magnitude: list[float] = field(default_factory=lambda: [1.0, 2.0])
    flip_prob: float = 0.5  # left-right only; never any other axis
    bias_field_prob: float = 0.4
    bias_field_coeff: float = 0.2  # polynomial coefficients drawn in [0, coeff] (MONAI RandBiasField)
    gamma_prob: float = 0.5
    gamma: list[float] = field(default_factory=lambda: [0.7, 1.5])
    gibbs_prob: float = 0.2
    gibbs_alpha: list[float] = field(default_factory=lambda: [0.0, 0.6])
    spike_prob: float = 0.05
    spike_intensity: list[float] | None = None  # log-magnitude of the k-space spike; None: MONAI's, from the image
    noise_prob: float = 0.3
    noise_std: float = 0.03  # Rician noise std, fraction of the [0, 1] intensity range
    histogram_shift_prob: float = 0.2
    histogram_points: int = 8

    def validate(self, prefix: str = "augment.base") -> None:
        """Raises ConfigError naming ``<prefix>.<field>`` for the first impossible value."""
        for field_ in dataclasses.fields(self):
            if field_.name.endswith("_prob"):
                check.in_range(f"{prefix}.{field_.name}", getattr(self, field_.name), 0.0, 1.0)
        check.bounds(f"{prefix}.crop_scale", self.crop_scale, 0.0, 1.0)
        check.positive(f"{prefix}.crop_scale[0]", self.crop_scale[0])
        check.at_least(f"{prefix}.crop_aspect", self.crop_aspect, 1.0)
        check.in_range(f"{prefix}.rotate_deg", self.rotate_deg, 0.0, 180.0)
        check.in_range(f"{prefix}.scale", self.scale, 0.0, 1.0, high_open=True)
        check.bounds(f"{prefix}.elastic_magnitude", self.elastic_magnitude, 0.0)
        check.at_least(f"{prefix}.bias_field_coeff", self.bias_field_coeff, 0.0)
        check.bounds(f"{prefix}.gamma", self.gamma, 1e-6)
        check.bounds(f"{prefix}.gibbs_alpha", self.gibbs_alpha, 0.0, 1.0)
        check.bounds(f"{prefix}.spike_intensity", self.spike_intensity)
        check.at_least(f"{prefix}.noise_std", self.noise_std, 0.0)
        check.at_least(f"{prefix}.histogram_points", self.histogram_points, 3)


# Modality name (BIDS suffix) -> family. Families share augmentation settings because their
# artefacts and noise levels are alike; anything not listed is "other".
MODALITY_FAMILIES: dict[str, str] = {
    "T1w": "t1", "T1": "t1", "T1c": "t1", "T1ce": "t1", "T1Gd": "t1", "MPRAGE": "t1",
    "T2w": "t2", "T2": "t2", "PD": "t2", "PDw": "t2", "T2star": "t2", "T2starw": "t2",
    "FLAIR": "flair", "T2FLAIR": "flair",
    "DWI": "dwi", "dwi": "dwi", "ADC": "dwi", "bold": "dwi",
}

# Built-in per-family adjustments of AugmentConfig.base, applied before the config's own
# ``families`` overrides. FLAIR and EPI-based scans have lower SNR and more ringing; EPI also
# shows spikes more often and rarely a strong receive-bias field after scanner correction.
FAMILY_DEFAULTS: dict[str, dict[str, float | list[float]]] = {
    "t1": {},
    "t2": {"gamma": [0.8, 1.3]},
    "flair": {"noise_std": 0.05, "gibbs_prob": 0.3},
    "dwi": {"noise_std": 0.08, "noise_prob": 0.5, "spike_prob": 0.15, "bias_field_prob": 0.2},
    "other": {},
}


@dataclass
class AugmentConfig:
    """Modality-aware augmentation settings (see :mod:`mocomri.augment`).

    The parameters for a scan of modality ``m`` are ``base``, then ``FAMILY_DEFAULTS`` for the
    family of ``m``, then ``families[<family>]`` from the config, each overriding the previous.
    """

    preset: str = "mri"  # "mri" (the full modality-aware pipeline) | "crop" (crop, resize, flip only) | "none"
    base: AugmentParams = field(default_factory=AugmentParams)
    families: dict[str, dict[str, float | list[float]]] = field(default_factory=dict)  # family -> {param: value}
    modality_families: dict[str, str] = field(default_factory=dict)  # extra modality -> family mappings
    # None: the two views of an item are independent crops (MoCo's). A fraction: they overlap,
    # the second box moved by at most this fraction of its side per axis (patch-level instances).
    pair_shift: float | None = None

    def validate(self) -> None:
        """Raises ConfigError naming an unknown preset, family or parameter."""
        if self.preset not in ("mri", "crop", "none"):
            raise ConfigError(f"augment.preset: expected 'mri', 'crop' or 'none', got {self.preset!r}")
        known = {f.name for f in dataclasses.fields(AugmentParams)}
        families = set(FAMILY_DEFAULTS) | set(self.modality_families.values())
        for family, params in self.families.items():
            if family not in families:
                raise ConfigError(f"augment.families.{family}: unknown family (known: {', '.join(sorted(families))})")
            for key in params:
                if key not in known:
                    raise ConfigError(f"augment.families.{family}.{key}: unknown parameter (known: {', '.join(sorted(known))})")
        if self.pair_shift is not None:
            check.in_range("augment.pair_shift", self.pair_shift, 0.0, 1.0)
        self.base.validate("augment.base")
        for family in sorted(families):
            try:
                self.params_for_family(family).validate(f"augment.families.{family}")
            except TypeError as e:  # a family override of the wrong type (e.g. a list for a number)
                raise ConfigError(f"augment.families.{family}: {e}") from e

    def family_of(self, modality: str) -> str:
        """The augmentation family of a modality name (``"other"`` when unknown)."""
        return self.modality_families.get(modality) or MODALITY_FAMILIES.get(modality, "other")

    def params_for(self, modality: str) -> AugmentParams:
        """The effective parameters for one modality: base, then family defaults, then overrides."""
        return self.params_for_family(self.family_of(modality))

    def params_for_family(self, family: str) -> AugmentParams:
        """The effective parameters for one family: base, then family defaults, then overrides."""
        merged = {**FAMILY_DEFAULTS.get(family, {}), **self.families.get(family, {})}
        return dataclasses.replace(self.base, **merged)
