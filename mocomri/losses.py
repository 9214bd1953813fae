"""InfoNCE over one positive key and a queue of negatives (MoCo, arXiv:1911.05722, eq. 1)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class InfoNCEOutput(NamedTuple):
    """What :func:`info_nce` returns; every field but ``loss`` is detached.

    Shape:
        loss, accuracy, pos_logit, neg_logit: ().  logits: (B, 1+K).
    """

    loss: Tensor  # mean cross entropy with the positive at index 0
    accuracy: Tensor  # fraction of queries whose positive beats every negative (a tie loses)
    pos_logit: Tensor  # mean of q·k⁺/T
    neg_logit: Tensor  # mean of q·k⁻/T over the negatives not masked out
    logits: Tensor  # [q·k⁺, q·queue]/T, masked entries at -inf


def info_nce(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    temperature: float,
    q_subjects: Tensor | None = None,
    queue_subjects: Tensor | None = None,
) -> InfoNCEOutput:
    """The InfoNCE loss of queries against their positive keys and the queue's negatives.

    Computed in float32 even under autocast, where half-precision logits divided by a small
    temperature would lose the differences that the loss is about.

    Args:
        q: the queries, L2-normalised.
        k: the positive key of each query, L2-normalised.
        queue: the negative keys, L2-normalised.
        temperature: T in the MoCo paper (0.07 in v1, 0.2 in v2).
        q_subjects: the subject id of each query. With ``queue_subjects``, a queue entry of the
            query's own subject is not a negative: its logit is set to -inf. Ids below 0 mean
            unknown and never mask.
        queue_subjects: the subject id of each queue entry.

    Returns:
        An :class:`InfoNCEOutput`; unpacks as ``loss, accuracy, *_``.

    Raises:
        ValueError: on mismatched shapes, a non-positive temperature, or only one of the two
            subject tensors.

    Shape:
        q: (B, C).  k: (B, C).  queue: (K, C).  q_subjects: (B,).  queue_subjects: (K,).
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be positive")
    if q.ndim != 2 or k.shape != q.shape:
        raise ValueError(f"q.shape={tuple(q.shape)} and k.shape={tuple(k.shape)} must be the same (B, C)")
    if queue.ndim != 2 or queue.shape[0] == 0 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue.shape={tuple(queue.shape)} must be (K, {q.shape[1]}) with K >= 1 to match q")
    if (q_subjects is None) != (queue_subjects is None):
        raise ValueError("q_subjects and queue_subjects must be given together (or neither)")

    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, queue = q.float(), k.float(), queue.float()
        # q: (B, C)  k: (B, C)  queue: (K, C)  logits: (B, 1+K)
        pos = torch.einsum("bc,bc->b", q, k).unsqueeze(1)
        neg = torch.einsum("bc,kc->bk", q, queue)
        logits = torch.cat([pos, neg], dim=1) / temperature

        masked = torch.zeros_like(neg, dtype=torch.bool)
        if q_subjects is not None and queue_subjects is not None:
            if q_subjects.shape != (q.shape[0],) or queue_subjects.shape != (queue.shape[0],):
                raise ValueError(
                    f"q_subjects.shape={tuple(q_subjects.shape)} and queue_subjects.shape="
                    f"{tuple(queue_subjects.shape)} must be ({q.shape[0]},) and ({queue.shape[0]},)"
                )
            # masked: (B, K), True where a queue entry comes from the query's own subject
            masked = (q_subjects[:, None] == queue_subjects[None, :]) & (queue_subjects[None, :] >= 0)
            logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(masked, float("-inf"))], dim=1)

        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        loss = F.cross_entropy(logits, target)

    with torch.no_grad():
        logits = logits.detach()
        # Strictly greater: collapsed embeddings tie everywhere and must not score 100%.
        accuracy = (logits[:, 0] > logits[:, 1:].max(dim=1).values).float().mean()
        pos_logit = logits[:, 0].mean()
        kept = ~masked
        neg_logit = logits[:, 1:].masked_fill(masked, 0.0).sum() / kept.sum().clamp(min=1)
    return InfoNCEOutput(loss, accuracy, pos_logit, neg_logit, logits)
