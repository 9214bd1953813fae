"""InfoNCE over one positive key and a queue of negatives (MoCo, arXiv:1911.05722, eq. 1)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class InfoNCEOutput(NamedTuple):
    """What :func:`info_nce` returns; every field but ``loss`` is detached.

    Shape:
        loss, accuracy, pos_logit, neg_logit: ().
    """

    loss: Tensor  # mean cross entropy with the positive at index 0
    accuracy: Tensor  # fraction of queries whose positive beats every negative (a tie loses)
    pos_logit: Tensor  # mean of q·k⁺/T
    neg_logit: Tensor  # mean of q·k⁻/T over the negatives not masked out


def info_nce(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    temperature: float,
    q_subjects: Tensor | None = None,
    queue_subjects: Tensor | None = None,
) -> InfoNCEOutput:
    """The InfoNCE loss of queries against their positive keys and the queue's negatives.

    loss_b = log(exp(l⁺_b) + Σ_k exp(l⁻_bk)) - l⁺_b with l = q·k/T: the cross entropy of the
    (B, 1+K) logits with the positive at index 0, as in MoCo, without building those logits.
    The (B, K) negative logits are the one large tensor, and they are worked on in place: masked,
    turned into their exponentials and kept for the backward pass, which is then one matmul.
    The textbook form (concatenate, divide by T, cross entropy) makes about twice as many passes
    over them and allocates each anew; at K = 65,536 they are 32 MiB of fp32
    (BENCHMARKS.md, "Queue cost").

    Computed in float32 even under autocast, where half-precision logits divided by a small
    temperature would lose the differences that the loss is about.

    Args:
        q: the queries, L2-normalised.
        k: the positive key of each query, L2-normalised.
        queue: the negative keys, L2-normalised. Must not change before ``backward``: pass a
            snapshot when the queue is updated in place (as :class:`~mocomri.models.MoCo` does).
        temperature: T in the MoCo paper (0.07 in v1, 0.2 in v2).
        q_subjects: the subject id of each query. With ``queue_subjects``, a queue entry of the
            query's own subject is not a negative: it is left out of the sum. Ids below 0 mean
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
    if q_subjects is not None and (q_subjects.shape != (q.shape[0],) or queue_subjects.shape != (queue.shape[0],)):
        raise ValueError(
            f"q_subjects.shape={tuple(q_subjects.shape)} and queue_subjects.shape="
            f"{tuple(queue_subjects.shape)} must be ({q.shape[0]},) and ({queue.shape[0]},)"
        )

    with torch.autocast(device_type=q.device.type, enabled=False):
        # Scale the (B, C) queries rather than the (B, K) logits.
        qs = q.float() / temperature
        pos = (qs * k.float()).sum(dim=1)  # (B,)
        lse, top, total, kept = _NegativesLogSumExp.apply(qs, queue.float(), q_subjects, queue_subjects)
        loss = (torch.logaddexp(pos, lse) - pos).mean()

    with torch.no_grad():
        pos = pos.detach()
        # Strictly greater: collapsed embeddings tie everywhere and must not score 100%.
        accuracy = (pos > top).float().mean()
        neg_logit = torch.where(kept > 0, total / kept.clamp(min=1), 0.0)  # no negatives: 0
        return InfoNCEOutput(loss, accuracy, pos.mean(), neg_logit)


class _NegativesLogSumExp(torch.autograd.Function):
    """lse_b = log Σ_k exp(qs_b · queue_k) over the negatives of query b, with the largest
    negative logit of each query and the sum and count of all negative logits on the side.

    One (B, K) buffer does all the work: the logits, masked in place, become exp(l - max_b) in
    place and are saved; the backward pass is then a matmul and a per-row scale. (PyTorch has
    no fused log-sum-exp of a matmul.)

    Shape:
        qs: (B, C).  queue: (K, C).  lse, top: (B,).  total, kept: ().
    """

    @staticmethod
    def forward(ctx, qs, queue, q_subjects, queue_subjects):
        logits = qs @ queue.T  # (B, K)
        # Σ_bk qs_b·queue_k = (Σ_b qs_b)·(Σ_k queue_k); the masked entries are taken off below.
        total = qs.sum(dim=0) @ queue.sum(dim=0)
        kept = qs.new_full((), float(logits.numel()))  # on the device: no host sync per step
        if q_subjects is not None:
            q_group, queue_group, n_groups = _subject_groups(q_subjects, queue_subjects)
            # The masked logits' sum, per subject: Σ_b qs_b · (Σ of its subject's keys). Queue
            # entries land in rows 0..G (G: not in the batch), queries read rows 0..G-1 and G + 1
            # (unknown subject), which stays empty.
            key_sums = qs.new_zeros(n_groups + 2, qs.shape[1]).index_add_(0, queue_group, queue)
            total -= (qs * key_sums[q_group]).sum()
            kept -= torch.bincount(queue_group, minlength=n_groups + 2)[q_group].sum()
            small = torch.int16 if n_groups + 2 < 2**15 else torch.int64  # the (B, K) compare's width
            logits.masked_fill_(q_group.to(small)[:, None] == queue_group.to(small)[None, :], float("-inf"))
        top = logits.amax(dim=1)  # (B,); -inf where every negative is masked
        high = top.masked_fill(torch.isinf(top), 0.0)
        weights = logits.sub_(high[:, None]).exp_()  # exp(l - high), 0 where masked
        norm = weights.sum(dim=1)  # (B,)
        lse = norm.log() + high
        ctx.save_for_backward(qs, queue, weights, norm)
        ctx.mark_non_differentiable(top, total, kept)
        return lse, top, total, kept

    @staticmethod
    def backward(ctx, grad_lse, *_):
        qs, queue, weights, norm = ctx.saved_tensors
        # d lse_b / d l_bk = weights_bk / norm_b (the softmax over the negatives); a query with
        # every negative masked (norm 0) gets no gradient through them.
        scale = torch.where(norm > 0, grad_lse / norm.clamp(min=torch.finfo(norm.dtype).tiny), 0.0)  # (B,)
        grad_qs = (weights @ queue) * scale[:, None] if ctx.needs_input_grad[0] else None
        grad_queue = weights.T @ (qs * scale[:, None]) if ctx.needs_input_grad[1] else None
        return grad_qs, grad_queue, None, None


def _subject_groups(q_subjects: Tensor, queue_subjects: Tensor) -> tuple[Tensor, Tensor, int]:
    """The batch's known subjects numbered 0..G-1; each query and queue entry gets its subject's
    number. A queue entry of an unknown (negative) subject or one not in the batch gets G, a
    query of an unknown subject G + 1, so query b and queue entry k share a known subject
    exactly when ``q_group[b] == queue_group[k]``; small numbers make the (B, K) mask a 16-bit
    comparison rather than a 64-bit one.

    Shape: q_subjects: (B,), queue_subjects: (K,) -> q_group: (B,), queue_group: (K,), int64.
    """
    known = torch.unique(q_subjects[q_subjects >= 0])  # sorted
    n = known.numel()

    def number(ids: Tensor, missing: int) -> Tensor:
        if n == 0:
            return torch.full_like(ids, missing)
        at = torch.searchsorted(known, ids).clamp(max=n - 1)
        return torch.where((ids >= 0) & (known[at] == ids), at, missing)

    return number(q_subjects, n + 1), number(queue_subjects, n), n
