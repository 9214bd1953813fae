"""MoCo v2: a query encoder, its momentum copy, and a queue of negative keys.

Momentum Contrast (He et al., arXiv:1911.05722) with the MLP head of MoCo v2 (Chen et al.,
arXiv:2003.04297).
"""

from __future__ import annotations

import copy
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mocomri.losses import info_nce
from mocomri.models.distributed import (
    batch_shuffle_ddp,
    batch_shuffle_single,
    batch_unshuffle_ddp,
    concat_all_gather,
    is_dist,
    world_size,
)
from mocomri.models.momentum import momentum_update
from mocomri.models.queue import KeyQueue
from mocomri.models.norm import has_batch_norm
from mocomri.models.shuffle_bn import resolve_shuffle_bn
from mocomri.models.split_bn import convert_to_split_bn


class MoCoOutput(NamedTuple):
    """One MoCo step's results; all but ``loss`` are detached.

    Shape:
        loss, accuracy, pos_logit, neg_logit: ().  q, k: (B, D).
    """

    loss: Tensor  # InfoNCE
    accuracy: Tensor  # top-1 contrastive accuracy (positive key vs the queue)
    pos_logit: Tensor  # mean q·k⁺/T
    neg_logit: Tensor  # mean q·k⁻/T over the negatives not masked out
    q: Tensor  # the queries, L2-normalised
    k: Tensor  # the positive keys, L2-normalised, in the queries' order


class MoCo(nn.Module):
    """Momentum Contrast (arXiv:1911.05722) with the MoCo v2 projector (arXiv:2003.04297).

    The query branch is ``base_encoder`` then ``projector``; the key branch is their momentum
    copies, updated by EMA and never by gradients. Each step's keys join a FIFO queue of
    negatives, gathered from all ranks under DDP.

    Args:
        base_encoder: the backbone, giving pooled features (B, F); see
            :func:`mocomri.models.encoders.create_encoder`. With ``shuffle_bn="split"`` its
            BatchNorm layers are converted in place.
        feature_dim: F, the backbone's feature dimension.
        proj_dim: D, the dimension of q and k (128 in MoCo).
        proj_hidden_dim: hidden width of the projector (2048 in MoCo v2 with a ResNet-50).
        queue_size: K in the MoCo paper (default 65536 there; 4096 here, for MRI cohorts of a
            few thousand scans: keep it below the number of training items).
        temperature: T in the MoCo paper (0.07 in v1, 0.2 in v2).
        mask_same_subject: drop queue entries from the query's own subject from its negatives
            (slices of one subject are not negatives of each other).
        shuffle_bn: one of :data:`mocomri.models.shuffle_bn.SHUFFLE_BN_MODES`, how BatchNorm
            is kept from leaking the positive (section 3.3 of the paper). ``"ddp"``: shuffle
            the key batch across ranks; ``"split"``: on one device, BatchNorm over
            ``bn_splits`` sub-batches in both branches (as in the official MoCo Colab demo)
            and a shuffled key batch; ``"none"``: nothing; ``"auto"``: ``"none"`` for an
            encoder without BatchNorm (GroupNorm has no batch statistics to leak through), else
            ``"ddp"`` when torch.distributed is initialised with more than one process, else
            ``"split"``. Resolved here, so initialise torch.distributed before building the
            model. ``"ddp"`` or ``"split"`` on an encoder without BatchNorm only shuffle the
            key batch, with a warning.
        bn_splits: sub-batches for ``"split"``.

    Raises:
        ValueError: for an unknown ``shuffle_bn``, ``"ddp"`` without torch.distributed, or a
            non-positive size or temperature.
    """

    def __init__(
        self,
        base_encoder: nn.Module,
        feature_dim: int,
        proj_dim: int = 128,
        proj_hidden_dim: int = 2048,
        queue_size: int = 4096,
        temperature: float = 0.2,
        mask_same_subject: bool = True,
        shuffle_bn: str = "auto",
        bn_splits: int = 8,
    ) -> None:
        super().__init__()
        sizes = dict(feature_dim=feature_dim, proj_dim=proj_dim, proj_hidden_dim=proj_hidden_dim, bn_splits=bn_splits)
        for name, value in sizes.items():
            if value <= 0:
                raise ValueError(f"{name}={value} must be positive")
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be positive")
        batch_norm = has_batch_norm(base_encoder)
        shuffle_bn = resolve_shuffle_bn(shuffle_bn, batch_norm, distributed=is_dist() and world_size() > 1)
        if shuffle_bn != "none" and not batch_norm:  # an explicit "ddp" or "split": "auto" gave "none"
            warnings.warn(f"shuffle_bn={shuffle_bn!r}: the encoder has no BatchNorm (e.g. model.norm=group), so "
                          "there are no batch statistics to keep from leaking the positive and only the key "
                          "batch is shuffled (bn_splits is unused); 'auto' or 'none' skip the shuffle",
                          stacklevel=2)
        if shuffle_bn == "ddp" and not is_dist():
            raise ValueError("shuffle_bn='ddp' needs torch.distributed to be initialised before MoCo is built")
        self.shuffle_bn = shuffle_bn
        self.temperature = temperature
        self.mask_same_subject = mask_same_subject

        if shuffle_bn == "split":
            base_encoder = convert_to_split_bn(base_encoder, bn_splits)
        self.base_encoder = base_encoder
        self.projector = nn.Sequential(
            nn.Linear(feature_dim, proj_hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(proj_hidden_dim, proj_dim),
        )
        # The key branch starts as an exact copy and then follows by EMA only.
        self.momentum_encoder = copy.deepcopy(self.base_encoder).requires_grad_(False)
        self.momentum_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.queue = KeyQueue(queue_size, proj_dim)

    @property
    def backbone(self) -> nn.Module:
        """The query encoder: the network that pretraining produces."""
        return self.base_encoder

    def forward(self, view_q: Tensor, view_k: Tensor, momentum: float, subjects: Tensor | None = None) -> MoCoOutput:
        """One MoCo step: queries, momentum update, keys, loss, and the keys into the queue.

        Args:
            view_q: the query views.
            view_k: the key views: other augmentations of the same images, in the same order.
            momentum: m in the MoCo paper, from a schedule in :mod:`mocomri.models.momentum`.
            subjects: the subject id of each image, for same-subject masking and the queue;
                under DDP, give it on every rank or on none.

        Raises:
            ValueError: on mismatched views or subjects, or an ``m`` outside [0, 1].

        Shape:
            view_q, view_k: (B, C_in, *S) with S = (H, W) or (D, H, W).  subjects: (B,).
        """
        if view_q.shape != view_k.shape:
            raise ValueError(f"view_q.shape={tuple(view_q.shape)} and view_k.shape={tuple(view_k.shape)} must match")
        if subjects is not None and subjects.shape != (view_q.shape[0],):
            raise ValueError(f"subjects.shape={tuple(subjects.shape)} must be ({view_q.shape[0]},)")

        q = F.normalize(self.projector(self.base_encoder(view_q)), dim=1)  # q: (B, D)

        with torch.no_grad():
            momentum_update(self.base_encoder, self.momentum_encoder, momentum)
            momentum_update(self.projector, self.momentum_projector, momentum)
            k = self._encode_keys(view_k)  # k: (B, D)

        masking = self.mask_same_subject and subjects is not None
        nce = info_nce(
            q,
            k,
            self.queue.keys.clone(),  # a snapshot: the enqueue below writes into the buffer
            self.temperature,
            q_subjects=subjects if masking else None,
            queue_subjects=self.queue.subjects if masking else None,
        )

        with torch.no_grad():
            keys = concat_all_gather(k)  # (world_size·B, D)
            key_subjects = concat_all_gather(subjects) if subjects is not None else None
            self.queue.enqueue(keys, key_subjects)
        return MoCoOutput(nce.loss, nce.accuracy, nce.pos_logit, nce.neg_logit, q.detach(), k)

    @torch.no_grad()
    def _encode_keys(self, view_k: Tensor) -> Tensor:
        """k = normalize(momentum_projector(momentum_encoder(view_k))), with BatchNorm seeing a
        shuffled batch. Shape: view_k: (B, C_in, *S) -> k: (B, D)."""
        if self.shuffle_bn == "ddp":
            view_k, idx_unshuffle = batch_shuffle_ddp(view_k)
        elif self.shuffle_bn == "split":
            view_k, idx_unshuffle = batch_shuffle_single(view_k)
        k = F.normalize(self.momentum_projector(self.momentum_encoder(view_k)), dim=1)
        if self.shuffle_bn == "ddp":
            k = batch_unshuffle_ddp(k, idx_unshuffle)
        elif self.shuffle_bn == "split":
            k = k[idx_unshuffle]
        return k
