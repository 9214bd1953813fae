"""Batched, on-device view augmentation: geometry in one resampling, MRI artefacts per item.

- :mod:`mocomri.augment.views`: :class:`BatchViews`, two random views of a whole batch;
- :mod:`mocomri.augment.geometry`: crop, rotation, zoom, flip and elastic as one sampling grid;
- :mod:`mocomri.augment.artefacts`: bias field, Gibbs ringing, k-space spikes, Rician noise,
  gamma and histogram shift, batched, each checked against MONAI's single-item transform;
- :mod:`mocomri.augment.settings`: :class:`AugmentConfig`, the ``augment:`` config section.
"""

from mocomri.augment.views import BatchViews

__all__ = ["BatchViews"]
