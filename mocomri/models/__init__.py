"""Encoders and their norm layer, the MoCo module and its parts: queue, momentum update, split BatchNorm."""

from mocomri.models.encoders import ENCODERS, create_encoder, encoder_from_config, spatial_dims_of
from mocomri.models.moco import MoCo, MoCoOutput
from mocomri.models.momentum import constant_momentum, cosine_momentum, momentum_update
from mocomri.models.norm import NORMS, has_batch_norm
from mocomri.models.queue import KeyQueue
from mocomri.models.split_bn import SplitBatchNorm2d, SplitBatchNorm3d, convert_to_split_bn

__all__ = [
    "ENCODERS",
    "KeyQueue",
    "MoCo",
    "MoCoOutput",
    "NORMS",
    "SplitBatchNorm2d",
    "SplitBatchNorm3d",
    "constant_momentum",
    "convert_to_split_bn",
    "cosine_momentum",
    "create_encoder",
    "encoder_from_config",
    "has_batch_norm",
    "momentum_update",
    "spatial_dims_of",
]
