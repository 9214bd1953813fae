from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mocomri.losses import info_nce


def numpy_info_nce(q, k, queue, temperature, keep=None):
    """Algorithm 1 of arXiv:1911.05722, one query at a time, in float64.

    ``keep[i]`` selects the queue entries that are negatives of query i (all when None).
    """
    q, k, queue = (np.asarray(a, dtype=np.float64) for a in (q, k, queue))
    losses, correct = [], []
    for i in range(q.shape[0]):
        negatives = queue if keep is None else queue[keep[i]]
        l_pos = q[i] @ k[i]
        l_neg = negatives @ q[i]
        logits = np.concatenate([[l_pos], l_neg]) / temperature
        top = logits.max()
        losses.append(-(logits[0] - top - math.log(np.exp(logits - top).sum())))
        correct.append(bool(np.all(logits[0] > logits[1:])))
    return float(np.mean(losses)), float(np.mean(correct))


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def test_info_nce__matches_numpy_reference():
    q, k, queue = _unit(5, 8, seed=0), _unit(5, 8, seed=1), _unit(17, 8, seed=2)
    out = info_nce(q, k, queue, temperature=0.2)
    loss, accuracy = numpy_info_nce(q, k, queue, 0.2)
    assert out.loss.item() == pytest.approx(loss, rel=1e-5)
    assert out.accuracy.item() == pytest.approx(accuracy)


def test_info_nce__logit_means_match_reference():
    q, k, queue = _unit(4, 6, seed=3), _unit(4, 6, seed=4), _unit(9, 6, seed=5)
    out = info_nce(q, k, queue, temperature=0.5)
    qn, kn, queuen = (a.double().numpy() for a in (q, k, queue))
    assert out.pos_logit.item() == pytest.approx(np.mean(np.sum(qn * kn, axis=1)) / 0.5, rel=1e-5)
    assert out.neg_logit.item() == pytest.approx(np.mean(qn @ queuen.T) / 0.5, rel=1e-5)


def test_info_nce__collinear_embeddings_give_log_k_plus_1():
    v = F.normalize(torch.ones(1, 4), dim=1)
    queue_size = 31
    out = info_nce(v.expand(3, 4), v.expand(3, 4), v.expand(queue_size, 4), temperature=0.07)
    assert out.loss.item() == pytest.approx(math.log(queue_size + 1), rel=1e-6)


def test_info_nce__same_subject_masking_equals_deleting_those_negatives():
    q, k, queue = _unit(4, 8, seed=6), _unit(4, 8, seed=7), _unit(10, 8, seed=8)
    q_subjects = torch.tensor([0, 1, 2, 3])
    queue_subjects = torch.tensor([0, 0, 1, -1, 2, 5, 1, -1, 9, 0])
    out = info_nce(q, k, queue, 0.1, q_subjects=q_subjects, queue_subjects=queue_subjects)

    keep = [[s != int(qs) for s in queue_subjects.tolist()] for qs in q_subjects]
    loss, accuracy = numpy_info_nce(q, k, queue, 0.1, keep=np.array(keep))
    assert out.loss.item() == pytest.approx(loss, rel=1e-5)
    assert out.accuracy.item() == pytest.approx(accuracy)
    # the negatives' mean is over unmasked entries only; -1 (unknown) never masks
    masked = torch.tensor(keep).logical_not()
    assert masked.sum().item() == 3 + 2 + 1 + 0
    neg = (q.double() @ queue.double().T / 0.1)[~masked]
    assert out.neg_logit.item() == pytest.approx(neg.mean().item(), rel=1e-5)


def test_info_nce__masking_with_unknown_query_subjects_changes_nothing():
    q, k, queue = _unit(3, 4, seed=9), _unit(3, 4, seed=10), _unit(6, 4, seed=11)
    plain = info_nce(q, k, queue, 0.2)
    masked = info_nce(q, k, queue, 0.2, q_subjects=torch.full((3,), -1), queue_subjects=torch.full((6,), -1))
    assert torch.equal(plain.loss, masked.loss)


def test_info_nce__accuracy_on_constructed_case():
    e = torch.eye(4)
    q = e
    k = e[[0, 1, 3, 3]]  # positive logits 1, 1, 0, 1
    queue = torch.stack([e[2], -e[0], -e[1], e[3]])
    out = info_nce(q, k, queue, temperature=1.0)
    # query 0: negatives (0, -1, 0, 0) < 1, right.  query 1: (0, 0, -1, 0) < 1, right.
    # query 2: a negative of 1 > 0, wrong.  query 3: a negative of 1 ties the positive, wrong.
    assert out.accuracy.item() == 0.5
    assert out.accuracy.ndim == 0


def test_info_nce__collapsed_embeddings_score_zero_accuracy():
    v = F.normalize(torch.ones(2, 4), dim=1)
    assert info_nce(v, v, v[:1].expand(5, 4), 0.2).accuracy.item() == 0.0


def test_info_nce__gradient_reaches_q_only_where_given():
    q = _unit(3, 4, seed=12).requires_grad_(True)
    out = info_nce(q, _unit(3, 4, seed=13), _unit(5, 4, seed=14), 0.2)
    out.loss.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    assert not out.accuracy.requires_grad and not out.neg_logit.requires_grad


def test_info_nce__float32_under_autocast():
    q, k, queue = _unit(4, 8, seed=15), _unit(4, 8, seed=16), _unit(12, 8, seed=17)
    expected = info_nce(q, k, queue, 0.07).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = info_nce(q.bfloat16(), k.bfloat16(), queue.bfloat16(), 0.07)
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx(expected.item(), rel=2e-2)


def test_info_nce__all_negatives_masked_stays_finite():
    q, k, queue = _unit(2, 4, seed=18), _unit(2, 4, seed=19), _unit(3, 4, seed=20)
    out = info_nce(q, k, queue, 0.2, q_subjects=torch.tensor([1, 1]), queue_subjects=torch.tensor([1, 1, 1]))
    assert out.loss.item() == pytest.approx(0.0, abs=1e-7)
    assert out.accuracy.item() == 1.0 and out.neg_logit.item() == 0.0


def _dense_info_nce(q, k, queue, temperature, masked=None):
    """The textbook formulation in float64: (B, 1+K) logits, masked entries at -inf, cross
    entropy against index 0 (as builder.py and main_moco.py of the MoCo code compute it)."""
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / temperature
    if masked is not None:
        logits[:, 1:] = logits[:, 1:].masked_fill(masked, float("-inf"))
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))


def test_info_nce__gradient_matches_dense_float64():
    q = _unit(6, 5, seed=21).requires_grad_(True)
    queue = _unit(10, 5, seed=23).requires_grad_(True)
    k = _unit(6, 5, seed=22)
    q_subjects = torch.tensor([0, 1, 2, 3, 4, 5])
    queue_subjects = torch.tensor([0, 1, 1, -1, 7, 2, 0, 3, 3, 9])
    out = info_nce(q, k, queue, 0.2, q_subjects, queue_subjects)
    out.loss.backward()

    q64 = q.detach().double().requires_grad_(True)
    queue64 = queue.detach().double().requires_grad_(True)
    masked = (q_subjects[:, None] == queue_subjects[None, :]) & (queue_subjects[None, :] >= 0)
    expected = _dense_info_nce(q64, k.double(), queue64, 0.2, masked)
    expected.backward()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(q.grad.double(), q64.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(queue.grad.double(), queue64.grad, rtol=1e-5, atol=1e-7)


def test_info_nce__fully_masked_query_has_finite_gradient():
    q = _unit(2, 4, seed=24).requires_grad_(True)
    # query 0's subject fills the queue: no negatives; query 1 has all of them
    out = info_nce(q, _unit(2, 4, seed=25), _unit(3, 4, seed=26), 0.2,
                   q_subjects=torch.tensor([4, 5]), queue_subjects=torch.tensor([4, 4, 4]))
    out.loss.backward()
    assert torch.isfinite(q.grad).all() and q.grad[1].abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0.0}, "temperature=0.0 must be positive"),
        ({"k": torch.zeros(3, 4)}, r"k.shape=\(3, 4\) must be the same"),
        ({"queue": torch.zeros(5, 3)}, r"queue.shape=\(5, 3\) must be \(K, 4\)"),
        ({"queue": torch.zeros(0, 4)}, r"queue.shape=\(0, 4\) must be \(K, 4\) with K >= 1"),
        ({"q_subjects": torch.zeros(2, dtype=torch.long)}, "must be given together"),
        (
            {"q_subjects": torch.zeros(3, dtype=torch.long), "queue_subjects": torch.zeros(5, dtype=torch.long)},
            r"q_subjects.shape=\(3,\)",
        ),
    ],
)
def test_info_nce__invalid_inputs_raise(kwargs, message):
    args = {"q": torch.zeros(2, 4), "k": torch.zeros(2, 4), "queue": torch.zeros(5, 4), "temperature": 0.2}
    with pytest.raises(ValueError, match=message):
        info_nce(**{**args, **kwargs})
