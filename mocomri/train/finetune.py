"""Fine-tuning with cross-entropy: chosen parameters of an encoder and a linear head, for a fixed
number of AdamW steps.

One loop (:func:`fine_tune_ce`) and one step (:func:`ce_step`) serve three recipes; what differs
between them is an argument:

- the supervised-from-scratch baseline (:func:`mocomri.eval.baselines.train_supervised`): every
  weight of a fresh encoder, :func:`choice_batches`, warm-up + cosine learning rate, the
  pretraining views as augmentation, a random head;
- module training (:func:`mocomri.peft.train.train_ce`): the module's parameters on a frozen
  encoder, :func:`sampler_batches`, a constant learning rate, no augmentation, a random head or
  one that starts as the linear probe (LP-FT);
- full fine-tuning (``tools/peft_lab/baselines.py``): module training's recipe with every weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

# (images (B, C, *S), their dataset indices, seed) -> one augmented view of each, (B, C, *S)
Augment = Callable[[torch.Tensor, Sequence[int], int], torch.Tensor]
# (dataset indices (B,), images (B, C, *S), labels (B,))
Batch = tuple[list[int], torch.Tensor, torch.Tensor]
# step -> learning rate (a pure function of the step, see mocomri.train.lr_schedule)
LrSchedule = Callable[[int], float]

# Step s of a run seeded s0 augments with seed s0 * AUGMENT_SEED_STRIDE + s: a prime stride, so
# no two (seed, step) pairs of runs shorter than it share an augmentation.
AUGMENT_SEED_STRIDE = 1_000_003


def endless_batches(dataset: Dataset, batch_size: int, seed: int, collate: Callable | None = None) -> Iterator[Any]:
    """Batches of ``dataset`` without end (the step budget, not epochs, ends training), items drawn
    with replacement by a ``RandomSampler`` seeded with ``seed``.

    The iterator is made here, not at the first batch: making it takes a draw of torch's global
    generator, which must come where callers have always taken it.
    """
    sampler = RandomSampler(dataset, replacement=True, num_samples=1 << 30,
                            generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, collate_fn=collate)
    return iter(loader)


def sampler_batches(dataset: Dataset, labels: np.ndarray, batch_size: int, seed: int) -> Iterator[Batch]:
    """Labelled batches of every item of ``dataset`` by :func:`endless_batches`.

    Args:
        dataset: items are dicts with an ``"image"`` tensor.
        labels: the class of every item of ``dataset``.
        batch_size: items per batch.
        seed: seeds the sampler.

    Shape:
        labels: (N,)  yields: indices (B,), images (B, C, *S), labels (B,)
    """
    labels = torch.as_tensor(np.asarray(labels))  # (N,)
    batches = endless_batches(_Indexed(dataset), batch_size, seed)
    return ((index.tolist(), images, labels[index]) for index, images in batches)


def choice_batches(dataset: Dataset, indices: np.ndarray, labels: np.ndarray, batch_size: int,
                   seed: int) -> Iterator[Batch]:
    """Labelled batches of ``dataset[indices]`` without end, each drawn by a NumPy generator seeded
    with ``seed``: distinct items within a batch, unless there are fewer items than a batch.

    Args:
        dataset: items are dicts with an ``"image"`` tensor.
        indices: the dataset items to draw from.
        labels: the class of each of ``indices``.
        batch_size: items per batch.
        seed: seeds the generator.

    Shape:
        indices, labels: (N,)  yields: indices (B,), images (B, C, *S), labels (B,)
    """
    rng = np.random.default_rng(seed)
    indices, labels = np.asarray(indices), np.asarray(labels)
    while True:
        pick = rng.choice(len(indices), size=batch_size, replace=len(indices) < batch_size)  # (B,) positions
        chosen = [int(i) for i in indices[pick]]
        images = torch.stack([dataset[i]["image"] for i in chosen])  # (B, C, *S)
        yield chosen, images, torch.as_tensor(labels[pick], dtype=torch.long)


def ce_step(model: nn.Module, head: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
            labels: torch.Tensor) -> torch.Tensor:
    """One cross-entropy step of ``head(model(images))``: the step every recipe of
    :func:`fine_tune_ce` runs and ``benchmarks/peft_cost.py`` times.

    Shape:
        images: (B, C, *S)  labels: (B,)  returns: () the loss, detached
    """
    logits = head(model(images))  # (B, K)
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def fine_tune_ce(
    model: nn.Module,
    head: nn.Module,
    parameters: Sequence[nn.Parameter],
    batches: Iterator[Batch],
    *,
    steps: int,
    lr: LrSchedule,
    weight_decay: float,
    device: torch.device,
    augment: Augment | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Trains ``parameters`` of ``model`` and every parameter of ``head`` with cross-entropy, AdamW.

    ``model`` and ``head`` are put in train mode for the loop (a
    :class:`mocomri.peft.PEMEncoder` keeps its BatchNorm in eval mode) and left in eval mode.

    Args:
        model: maps images to pooled features, on ``device``.
        head: the linear head on the features, on ``device``, initialised by the caller.
        parameters: the parameters of ``model`` to train: a module's, or all of them.
        batches: endless ``(indices, images, labels)`` (:func:`choice_batches`, :func:`sampler_batches`).
        steps: optimiser steps.
        lr: the learning rate of each step (constant, or :func:`mocomri.train.lr_schedule.warmup_cosine_lr`).
        weight_decay: AdamW's decoupled weight decay.
        device: where images and labels go.
        augment: applied to each batch on ``device``, or None.
        seed: step ``s`` augments with seed ``seed * AUGMENT_SEED_STRIDE + s``.

    Returns:
        The loss of every step, detached (no host sync inside the loop).

    Shape:
        images: (B, C, *S)  labels: (B,)  returns: (steps,)
    """
    # each step sets its own rate before stepping; the constructor's is never used
    optimizer = torch.optim.AdamW([*parameters, *head.parameters()], lr=0.0, weight_decay=weight_decay)
    model.train()
    head.train()
    losses = []
    for step in range(steps):
        # 1) this step's learning rate
        for group in optimizer.param_groups:
            group["lr"] = lr(step)
        # 2) a batch on the device, augmented
        indices, images, labels = next(batches)
        images = images.to(device)  # (B, C, *S)
        if augment is not None:
            images = augment(images, indices, seed * AUGMENT_SEED_STRIDE + step)
        # 3) forward, backward, update
        losses.append(ce_step(model, head, optimizer, images, labels.to(device)))
    model.eval()
    head.eval()
    return torch.stack(losses) if losses else torch.zeros(0)


class _Indexed(Dataset):
    """(index, image) pairs of an evaluation dataset, so a batch finds its labels."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        return i, self.dataset[i]["image"]
