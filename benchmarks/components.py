"""Before/after timings of the step's parts, each against the formulation it replaced.

- the momentum update: a Python loop over parameters (``builder.py``) vs one fused
  ``torch._foreach_lerp_`` (:func:`mocomri.models.momentum_update`);
- the enqueue: ``torch.cat`` then slice vs two slice writes into a ring buffer
  (:class:`mocomri.models.KeyQueue`);
- the negatives, per queue size K: the logits against the queue, InfoNCE forward and backward,
  and the enqueue, in both formulations;
- on CUDA only: a host sync per step (``loss.item()``) and pinned vs pageable host-to-device
  copies (on the CPU both are no-ops).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from mocomri.losses import info_nce
from mocomri.models import KeyQueue, create_encoder, momentum_update
from mocomri.timing import device_sync, paired_ratio, summary, time_interleaved


def momentum_update_cost(
    encoder: str, width: int, proj_hidden_dim: int, proj_dim: int, device: torch.device, rounds: int
) -> dict:
    """The key encoder's EMA update over backbone and projector: loop vs fused.

    Returns:
        ``{"parameters", "tensors", "loop": {...}, "fused": {...}, "speedup"}``, times in ms.
    """
    backbone, features = create_encoder(encoder, width=width)
    head = nn.Sequential(nn.Linear(features, proj_hidden_dim), nn.ReLU(), nn.Linear(proj_hidden_dim, proj_dim))
    query = nn.Sequential(backbone, head).to(device)
    key = copy.deepcopy(query).requires_grad_(False)
    pairs = list(zip(query.parameters(), key.parameters()))
    m = 0.99

    @torch.no_grad()
    def loop() -> None:
        for param_q, param_k in pairs:
            param_k.data = param_k.data * m + param_q.data * (1.0 - m)

    def fused() -> None:
        momentum_update(query, key, m)

    sync = device_sync(device)
    for fn in (loop, fused):
        fn()
    times = time_interleaved({"loop": loop, "fused": fused}, rounds, 5, sync)
    return {
        "parameters": sum(p.numel() for p, _ in pairs),
        "tensors": len(pairs),
        "loop": summary(times["loop"]),
        "fused": summary(times["fused"]),
        "speedup": paired_ratio(times["loop"], times["fused"]),
    }


def enqueue_cost(queue_size: int, batch: int, dim: int, device: torch.device, rounds: int) -> dict:
    """Writing a batch of keys into a queue of ``queue_size``: ``torch.cat`` vs in place.

    Returns:
        ``{"queue_size", "batch", "cat": {...}, "in_place": {...}, "speedup"}``, times in ms.
    """
    keys = F.normalize(torch.randn(batch, dim, device=device), dim=1)
    subjects = torch.arange(batch, device=device)
    ring = KeyQueue(queue_size, dim).to(device)
    state = {"queue": F.normalize(torch.randn(dim, queue_size, device=device), dim=0)}

    def cat() -> None:
        state["queue"] = torch.cat([keys.T, state["queue"]], dim=1)[:, :queue_size]

    def in_place() -> None:
        ring.enqueue(keys, subjects)

    sync = device_sync(device)
    for fn in (cat, in_place):
        fn()
    times = time_interleaved({"cat": cat, "in_place": in_place}, rounds, 10, sync)
    return {
        "queue_size": queue_size,
        "batch": batch,
        "cat": summary(times["cat"]),
        "in_place": summary(times["in_place"]),
        "speedup": paired_ratio(times["cat"], times["in_place"]),
    }


def negatives_cost(queue_sizes: list[int], batch: int, dim: int, device: torch.device, rounds: int) -> list[dict]:
    """The queue's share of a step, per K, on its own: logits against the queue, InfoNCE
    forward and backward (with same-subject masking, as in training) and the enqueue.

    ``mocomri`` is :func:`mocomri.losses.info_nce` and :class:`~mocomri.models.KeyQueue`;
    ``reference`` is ``builder.py``'s einsums and ``torch.cat`` logits, cross entropy, and the
    ``torch.cat`` queue.

    Returns:
        One row per K: ``{"queue_size", "mocomri": {...}, "reference": {...}}``, times in ms.
    """
    fns = {}
    q0 = F.normalize(torch.randn(batch, dim, device=device), dim=1)
    k = F.normalize(torch.randn(batch, dim, device=device), dim=1)
    subjects = torch.arange(batch, device=device) % max(batch // 8, 1)
    for size in queue_sizes:
        ring = KeyQueue(size, dim).to(device)
        ring.enqueue(k, subjects)  # some entries share the queries' subjects, so masking has work
        state = {"queue": F.normalize(torch.randn(dim, size, device=device), dim=0)}

        def ours(ring: KeyQueue = ring) -> None:
            q = q0.clone().requires_grad_()
            out = info_nce(q, k, ring.keys.clone(), 0.2, q_subjects=subjects, queue_subjects=ring.subjects)
            out.loss.backward()
            ring.enqueue(k, subjects)

        def reference(state: dict = state, size: int = size) -> None:
            q = q0.clone().requires_grad_()
            l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
            l_neg = torch.einsum("nc,ck->nk", q, state["queue"].clone().detach())
            logits = torch.cat([l_pos, l_neg], dim=1) / 0.2
            F.cross_entropy(logits, torch.zeros(batch, dtype=torch.long, device=device)).backward()
            state["queue"] = torch.cat([k.T, state["queue"]], dim=1)[:, :size]

        fns[(size, "mocomri")] = ours
        fns[(size, "reference")] = reference
    for fn in fns.values():
        fn()
    times = time_interleaved({f"{s}/{f}": fn for (s, f), fn in fns.items()}, rounds, 3, device_sync(device))
    return [
        {"queue_size": s, "mocomri": summary(times[f"{s}/mocomri"]), "reference": summary(times[f"{s}/reference"])}
        for s in queue_sizes
    ]


def host_sync_cost(step, rounds: int) -> dict | None:
    """A training step with and without ``loss.item()`` after it (CUDA only; None on the CPU,
    where every op has finished when it returns and a sync costs nothing).

    Args:
        step: a warmed-up :class:`~benchmarks.step.TrainStep`.
    """
    if step.device.type != "cuda":
        return None

    def with_item() -> None:
        step().item()

    times = time_interleaved({"no_sync": step, "item_each_step": with_item}, rounds, 5, step.sync)
    return {
        "no_sync": summary(times["no_sync"]),
        "item_each_step": summary(times["item_each_step"]),
        "speedup": paired_ratio(times["item_each_step"], times["no_sync"]),
    }


def pinned_copy_cost(shape: tuple[int, ...], device: torch.device, rounds: int) -> dict | None:
    """Host-to-device copy of one batch of views, pinned vs pageable (CUDA only; None on the CPU).

    Returns:
        ``{"megabytes", "pageable": {...}, "pinned": {...}, "speedup"}``, times in ms.
    """
    if device.type != "cuda":
        return None
    pageable = torch.randn(shape)
    pinned = pageable.pin_memory()
    sync = device_sync(device)
    times = time_interleaved(
        {
            "pageable": lambda: pageable.to(device, non_blocking=True),
            "pinned": lambda: pinned.to(device, non_blocking=True),
        },
        rounds,
        10,
        sync,
    )
    return {
        "megabytes": pageable.numel() * 4 / 1e6,
        "pageable": summary(times["pageable"]),
        "pinned": summary(times["pinned"]),
        "speedup": paired_ratio(times["pageable"], times["pinned"]),
    }
