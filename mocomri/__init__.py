"""mocomri: self-supervised MoCo pretraining for MRI."""

__version__ = "0.1.0"
