"""The fine-tuning loop, pinned through both of its recipes: the supervised baseline
(:func:`mocomri.eval.baselines.train_supervised`) and cross-entropy module training / full
fine-tuning (:func:`mocomri.peft.train.train_ce`).

The pins in ``tests/pinned_finetune.json`` were recorded from this test on the code before the two
recipes shared one loop (``MOCOMRI_RECORD_PINS=1`` rewrites them; only do that on purpose). A
changed batch draw, augmentation seed, learning rate or head initialisation moves every number
far beyond the tolerance, which allows only another CPU's fp32 summation order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mocomri.eval.baselines import SupervisedBudget, train_supervised
from mocomri.eval.items import LabelledItems
from mocomri.peft.train import TrainOptions, train_ce

PINS = Path(__file__).with_name("pinned_finetune.json")
N_ITEMS = 20
FEATURE_DIM = 4


def _images(n: int, seed: int) -> torch.Tensor:
    """Class ``i % 2``: a bright top-left (0) or bottom-right (1) quarter on noise.

    Shape:
        returns: (n, 1, 8, 8)
    """
    images = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    for i in range(n):
        corner = slice(0, 4) if i % 2 == 0 else slice(4, 8)
        images[i, :, corner, corner] += 2.0
    return images


DATASET = [{"image": image} for image in _images(N_ITEMS, seed=0)]
LABELS = np.arange(N_ITEMS) % 2
PROBE = _images(6, seed=1)  # (6, 1, 8, 8): fixed inputs the trained model is read on


def _backbone() -> nn.Module:
    """A tiny encoder with BatchNorm (its batch statistics are part of what training changes)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                         nn.Conv2d(3, FEATURE_DIM, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def _read(model: nn.Module) -> list[float]:
    with torch.no_grad():
        return model.eval()(PROBE).flatten().tolist()


def _supervised(indices: np.ndarray, augmented: bool) -> dict:
    seen: list[list[int]] = []
    seeds: list[int] = []

    def augment(images: torch.Tensor, chosen, seed: int) -> torch.Tensor:
        seen.append([int(i) for i in chosen])
        seeds.append(seed)
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
        return images + 0.3 * noise

    budget = SupervisedBudget(steps=6, batch_size=6, lr=1e-2, weight_decay=0.05, warmup_steps=2)
    model = train_supervised(_backbone(), FEATURE_DIM, DATASET, indices, LABELS[indices], 2,
                             augment=augment if augmented else None, budget=budget, device=torch.device("cpu"), seed=2)
    head = model[1]
    return {"logits": _read(model), "head_weight": head.weight.flatten().tolist(), "head_bias": head.bias.tolist(),
            "augmented_indices": seen, "augment_seeds": seeds}


def _ce(head_init: str, full: bool) -> dict:
    model = _backbone()
    # full fine-tuning trains every weight; a module stands in as the last convolution alone
    parameters = list(model.parameters()) if full else list(model[3].parameters())
    items = LabelledItems(DATASET, LABELS, np.arange(N_ITEMS) // 2, ("a", "b"), np.full(N_ITEMS, "train"),
                          np.arange(N_ITEMS))
    options = TrainOptions(steps=6, batch_size=8, lr=1e-2, weight_decay=0.01, seed=3, head_init=head_init,
                           device="cpu")
    torch.manual_seed(options.seed)  # as train_module and fine_tune seed the head
    head = train_ce(model, parameters, FEATURE_DIM, items, options, torch.device("cpu"))
    with torch.no_grad():
        logits = (model.eval()(PROBE) @ head.weight.T + head.bias).flatten().tolist()
    return {"logits": logits, "head_weight": head.weight.flatten().tolist(), "head_bias": head.bias.tolist()}


CASES = {
    # fewer items than a batch: batches drawn with replacement
    "supervised_plain": lambda: _supervised(np.arange(1, 6), augmented=False),
    "supervised_augmented": lambda: _supervised(np.arange(2, 16), augmented=True),
    "ce_random_full": lambda: _ce("random", full=True),
    "ce_probe_module": lambda: _ce("probe", full=False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fine_tuning__numbers_are_pinned(case: str) -> None:
    computed = CASES[case]()
    pins = json.loads(PINS.read_text()) if PINS.exists() else {}
    if os.environ.get("MOCOMRI_RECORD_PINS") == "1":
        PINS.write_text(json.dumps(pins | {case: computed}, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"recorded {case} in {PINS.name}")
    pinned = pins[case]
    assert computed.keys() == pinned.keys()
    for key, value in pinned.items():
        if key.startswith("augment"):
            assert computed[key] == value, key  # the same draws and seeds, exactly
        else:
            np.testing.assert_allclose(computed[key], value, rtol=1e-4, atol=1e-6, err_msg=key)
