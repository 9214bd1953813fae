"""Shuffling BN: how the key branch keeps BatchNorm from leaking the positive (arXiv:1911.05722, section 3.3).

Within one batch, BatchNorm lets a query see statistics of its own positive key and find it
without learning a representation. MoCo shuffles the key batch across processes before the
key encoder and unshuffles the keys after it; on one device, BatchNorm normalises sub-batches
separately (:mod:`mocomri.models.split_bn`) and the key batch is shuffled within the device.
"""

from __future__ import annotations

# The config checks moco.shuffle_bn against this tuple; the module imports nothing of mocomri so
# that the config, the bottom layer, may import it.
SHUFFLE_BN_MODES: tuple[str, ...] = ("auto", "ddp", "split", "none")


def resolve_shuffle_bn(mode: str, batch_norm: bool, distributed: bool) -> str:
    """The mode a MoCo model runs with: ``mode`` itself, or what ``"auto"`` stands for.

    Args:
        mode: one of :data:`SHUFFLE_BN_MODES`.
        batch_norm: whether the encoder has a BatchNorm layer.
        distributed: whether torch.distributed runs more than one process.

    Returns:
        ``"ddp"``, ``"split"`` or ``"none"``.

    Raises:
        ValueError: for a mode not in :data:`SHUFFLE_BN_MODES`.
    """
    if mode not in SHUFFLE_BN_MODES:
        raise ValueError(f"shuffle_bn={mode!r} must be one of {SHUFFLE_BN_MODES}")
    if mode != "auto":
        return mode
    # 1) no BatchNorm (e.g. GroupNorm): no batch statistics to leak through
    if not batch_norm:
        return "none"
    # 2) several processes: shuffle across them, as the paper does
    if distributed:
        return "ddp"
    # 3) one process: split BatchNorm over sub-batches
    return "split"
