"""A plain MoCo v2 step, written as the original code writes it: the baseline of the benchmarks
(``benchmarks/``) and an oracle of the tests.

This is the formulation the issue names as the reference and that most MoCo v2 code still
uses: contiguous fp32 tensors, no autocast, a Python loop over the parameters for the momentum
update (``param_k.data = param_k.data * m + param_q.data * (1. - m)``, line for line from
``moco/builder.py`` of facebookresearch/moco, arXiv:1911.05722), logits built with two einsums
and a ``torch.cat`` as there, and a queue that is rebuilt every step by ``torch.cat`` then
slicing (the common re-implementation of the FIFO; ``builder.py`` itself writes a slice in
place, which is what :class:`mocomri.models.KeyQueue` does). On one device, BatchNorm is kept
from leaking the positive as in the official MoCo Colab demo: split BatchNorm and a shuffled key
batch, with the demo's ``SplitBatchNorm`` (one ``batch_norm`` call on the batch reshaped to
(N/G, G·C, H, W); :class:`ColabSplitBatchNorm2d`). The network, its weights and the sub-batch
count are those of the fast step, so the two compare formulations, not networks.

It is deliberately not optimised. It is also an independent check of :class:`mocomri.models.MoCo`:
with the same weights, inputs and random state, the two give the same loss (``tests/test_benchmarks.py``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mocomri.models.split_bn import _num_groups, _SplitBatchNorm, _to_split


class _ColabSplitBatchNorm(_SplitBatchNorm):
    """The MoCo Colab demo's ``SplitBatchNorm``: sample i in sub-batch ``i % G``, all sub-batches
    in one native call on the batch viewed as (N/G, G·C, *S). That view exists only for
    contiguous NCHW memory, which is why :class:`mocomri.models.SplitBatchNorm2d` cuts
    contiguous blocks instead. Same statistics, same running-average rule."""

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        groups = _num_groups(input.shape[0], self.num_splits, input[0, 0].numel()) if self.training else 1
        if groups == 1:
            return nn.modules.batchnorm._BatchNorm.forward(self, input)
        n, c = input.shape[:2]
        mean, var = self.running_mean.repeat(groups), self.running_var.repeat(groups)
        out = F.batch_norm(
            input.reshape(n // groups, groups * c, *input.shape[2:]), mean, var,
            self.weight.repeat(groups), self.bias.repeat(groups), True, self.momentum, self.eps,
        )
        self.num_batches_tracked.add_(1)
        self.running_mean.copy_(mean.view(groups, c).mean(dim=0))
        self.running_var.copy_(var.view(groups, c).mean(dim=0))
        return out.reshape(input.shape)


class ColabSplitBatchNorm2d(_ColabSplitBatchNorm, nn.BatchNorm2d):
    """:class:`_ColabSplitBatchNorm` for (N, C, H, W)."""


class ColabSplitBatchNorm3d(_ColabSplitBatchNorm, nn.BatchNorm3d):
    """:class:`_ColabSplitBatchNorm` for (N, C, D, H, W)."""


def colab_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    """Swaps every plain BatchNorm2d/3d child of ``module`` for its Colab-style split version,
    keeping weights and statistics (as :func:`mocomri.models.convert_to_split_bn` does)."""
    kinds = {nn.BatchNorm2d: ColabSplitBatchNorm2d, nn.BatchNorm3d: ColabSplitBatchNorm3d}
    for name, child in module.named_children():
        if type(child) in kinds:
            setattr(module, name, _to_split(child, kinds[type(child)], num_splits))
        else:
            colab_split_bn(child, num_splits)
    return module


class ReferenceMoCo(nn.Module):
    """MoCo v2 as in ``moco/builder.py`` (single device, no masking, no DDP).

    Args:
        base_encoder: the backbone, giving pooled features (B, F); already converted by
            :func:`colab_split_bn` when the batches should be normalised in sub-batches.
        feature_dim: F.
        proj_dim: ``dim`` in builder.py (128).
        proj_hidden_dim: the MLP head's hidden width (2048 in MoCo v2).
        queue_size: K in the MoCo paper.
        temperature: T in the MoCo paper.

    Shape:
        queue: (C, K), columns L2-normalised, as in builder.py (the transpose of KeyQueue.keys).
    """

    queue: Tensor

    def __init__(
        self,
        base_encoder: nn.Module,
        feature_dim: int,
        proj_dim: int = 128,
        proj_hidden_dim: int = 2048,
        queue_size: int = 4096,
        temperature: float = 0.2,
    ) -> None:
        super().__init__()
        self.K = queue_size
        self.T = temperature
        head = nn.Sequential(nn.Linear(feature_dim, proj_hidden_dim), nn.ReLU(), nn.Linear(proj_hidden_dim, proj_dim))
        self.encoder_q = nn.Sequential(base_encoder, head)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.data.copy_(param_q.data)
            param_k.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(proj_dim, queue_size), dim=0))

    @torch.no_grad()
    def _momentum_update_key_encoder(self, m: float) -> None:
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.data = param_k.data * m + param_q.data * (1.0 - m)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: Tensor) -> None:
        # keys: (B, C); the newest B columns go first and the oldest B fall off the end
        self.queue = torch.cat([keys.T, self.queue], dim=1)[:, : self.K]

    @torch.no_grad()
    def _batch_shuffle_single_gpu(self, x: Tensor) -> tuple[Tensor, Tensor]:
        idx_shuffle = torch.randperm(x.shape[0], device=x.device)
        idx_unshuffle = torch.argsort(idx_shuffle)
        return x[idx_shuffle], idx_unshuffle

    def forward(self, im_q: Tensor, im_k: Tensor, m: float) -> tuple[Tensor, Tensor]:
        """Returns ``(logits, labels)`` as builder.py does; the caller applies cross entropy.

        Shape:
            im_q, im_k: (B, C_in, *S).  logits: (B, 1+K).  labels: (B,).
        """
        q = F.normalize(self.encoder_q(im_q), dim=1)  # q: (B, C)
        with torch.no_grad():
            self._momentum_update_key_encoder(m)
            im_k, idx_unshuffle = self._batch_shuffle_single_gpu(im_k)
            k = F.normalize(self.encoder_k(im_k), dim=1)  # k: (B, C)
            k = k[idx_unshuffle]
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # (B, 1)
        l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach())  # (B, K)
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        self._dequeue_and_enqueue(k)
        return logits, labels


def reference_train_step(
    model: ReferenceMoCo, optimizer: torch.optim.Optimizer, im_q: Tensor, im_k: Tensor, m: float
) -> float:
    """One step of ``main_moco.py``'s loop: forward, cross entropy, backward, SGD, and the loss
    read back to the host for the running meter (``losses.update(loss.item(), ...)``).

    Returns:
        The loss, as a Python float.
    """
    logits, labels = model(im_q, im_k, m)
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()
