"""Module arithmetic against hand computations from the paper's released definitions."""

from __future__ import annotations

import warnings

import pytest
import torch

from mocomri.models import create_encoder
from mocomri.peft import PEM, Head, PEMEncoder, PEMError, PEMSpec, add, analogy, negate

LABELS = ("a", "b")


def _encoder(seed: int = 0):
    torch.manual_seed(seed)
    return create_encoder("resnet18", in_channels=1, width=2)[0].eval()


def _pem(kind: str, perturb: int, seed: int = 0, rank: int = 2, targets=("layer4.*.conv*", "layer4.*.bn2"),
         encoder_seed: int = 0, head: bool = True) -> PEM:
    """A module on the tiny base encoder with random (non-identity) tensors."""
    targets = tuple(t for t in targets if kind == "ia3" or "bn" not in t)
    wrapped = PEMEncoder(_encoder(encoder_seed), PEMSpec(kind, targets, rank=rank, alpha=4.0, seed=seed))
    g = torch.Generator().manual_seed(perturb)
    with torch.no_grad():
        for p in wrapped.trainable_parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    heads = [Head(LABELS, torch.randn(2, 16, generator=g), torch.randn(2, generator=g))] if head else []
    pem = wrapped.to_pem("resnet18", 1, 2, heads)
    pem.path = f"m{perturb}.safetensors"
    return pem


def _delta_w(pem: PEM, layer: str) -> torch.Tensor:
    """ΔW = (alpha/r) B A of one layer, by hand. Shape: (out, in·k·k)."""
    a, b = pem.tensors[f"{layer}.lora_A"], pem.tensors[f"{layer}.lora_B"]
    return pem.spec.alpha / pem.spec.rank * b @ a.reshape(a.shape[0], -1)


LAYER = "layer4.1.conv2"


def test_negate__lora_flips_delta_w_and_keeps_a() -> None:
    pem = _pem("lora", 1)
    neg = negate(pem)
    torch.testing.assert_close(_delta_w(neg, LAYER), -_delta_w(pem, LAYER))
    assert torch.equal(neg.tensors[f"{LAYER}.lora_A"], pem.tensors[f"{LAYER}.lora_A"])
    assert neg.heads == []


def test_negate__ia3_gives_two_minus_l() -> None:
    pem = _pem("ia3", 1)
    neg = negate(pem)
    for key, value in pem.tensors.items():
        torch.testing.assert_close(neg.tensors[key], 2.0 - value)
    torch.testing.assert_close(negate(neg).tensors[key], value)


@pytest.mark.parametrize("kind", ["lora", "ia3"])
def test_add__lambda_one_and_zero_give_back_each_input(kind: str) -> None:
    first, second = _pem(kind, 1), _pem(kind, 2)
    for lam, expected in ((1.0, first), (0.0, second)):
        merged = add(first, second, lam)
        for key, value in expected.tensors.items():
            torch.testing.assert_close(merged.tensors[key], value)
        torch.testing.assert_close(merged.heads[0].weight, expected.heads[0].weight)


def test_add__lora_delta_w_has_the_cross_terms() -> None:
    first, second, lam = _pem("lora", 1), _pem("lora", 2), 0.3
    merged = add(first, second, lam)
    t = {k: (first.tensors[k], second.tensors[k]) for k in first.tensors}
    (a1, a2), (b1, b2) = t[f"{LAYER}.lora_A"], t[f"{LAYER}.lora_B"]
    a = (lam * a1 + (1 - lam) * a2).reshape(a1.shape[0], -1)
    expected = 4.0 / 2 * (lam * b1 + (1 - lam) * b2) @ a
    torch.testing.assert_close(_delta_w(merged, LAYER), expected)
    # ... which is not the λ-mix of the two ΔW
    assert not torch.allclose(_delta_w(merged, LAYER), lam * _delta_w(first, LAYER) + (1 - lam) * _delta_w(second, LAYER))


def test_add__ia3_is_the_weighted_mean_and_heads_of_one_task_merge_with_lambda() -> None:
    first, second, lam = _pem("ia3", 1), _pem("ia3", 2), 0.7
    merged = add(first, second, lam)
    for key in first.tensors:
        torch.testing.assert_close(merged.tensors[key], lam * first.tensors[key] + (1 - lam) * second.tensors[key])
    torch.testing.assert_close(merged.heads[0].bias, lam * first.heads[0].bias + (1 - lam) * second.heads[0].bias)
    assert merged.provenance["operation"] == "add" and merged.provenance["lambda"] == lam


def test_add__heads_of_different_tasks_are_kept_side_by_side() -> None:
    first, second = _pem("lora", 1), _pem("lora", 2)
    second.heads[0].labels = ("x", "y", "z")
    merged = add(first, second, 0.5)
    assert [h.labels for h in merged.heads] == [LABELS, ("x", "y", "z")]
    assert torch.equal(merged.heads[1].weight, second.heads[0].weight)


def test_analogy__lora_matches_the_released_formula() -> None:
    cls, tgt, src, lam = _pem("lora", 1), _pem("lora", 2, head=False), _pem("lora", 3, head=False), 0.4
    out = analogy(cls, tgt, src, lam)
    for key in cls.tensors:
        c, t, s = cls.tensors[key], tgt.tensors[key], src.tensors[key]
        sign = -1.0 if key.endswith("lora_B") else 1.0  # negation flips B only
        torch.testing.assert_close(out.tensors[key], lam * c + (1 - lam) * t + sign * (1 - lam) * s)
    assert torch.equal(out.heads[0].weight, cls.heads[0].weight)


def test_analogy__ia3_matches_the_released_formula() -> None:
    cls, tgt, src, lam = _pem("ia3", 1), _pem("ia3", 2, head=False), _pem("ia3", 3, head=False), 0.25
    out = analogy(cls, tgt, src, lam)
    for key in cls.tensors:
        c, t, s = cls.tensors[key], tgt.tensors[key], src.tensors[key]
        torch.testing.assert_close(out.tensors[key], (1 - lam) + lam * c + (1 - lam) * (t - s))


@pytest.mark.parametrize("other, field", [
    (dict(encoder_seed=5), "base encoder hash"),
    (dict(targets=("layer3.*.conv*",)), "targets"),
    (dict(rank=3), "rank"),
])
def test_compose__mismatched_modules_are_an_error_naming_files_and_field(other: dict, field: str) -> None:
    with pytest.raises(PEMError, match=rf"cannot compose m1.safetensors and m2.safetensors: their {field} differs"):
        add(_pem("lora", 1), _pem("lora", 2, **other), 0.5)


def test_compose__different_kind_is_an_error() -> None:
    with pytest.raises(PEMError, match="their kind differs"):
        add(_pem("lora", 1), _pem("ia3", 2), 0.5)


def test_compose__different_init_seed_is_a_warning() -> None:
    with pytest.warns(UserWarning, match="different seeds"):
        add(_pem("lora", 1), _pem("lora", 2, seed=9), 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        add(_pem("lora", 1), _pem("lora", 2), 0.5)


def test_choose_lambda__takes_the_first_best_point_of_the_grid_and_returns_the_curve() -> None:
    from mocomri.peft.compose import choose_lambda

    lam, curve = choose_lambda(lambda x: -abs(x - 0.3) if x != 0.9 else -abs(0.3 - 0.3), grid=(0.0, 0.3, 0.6, 0.9))
    assert lam == 0.3 and [p["lambda"] for p in curve] == [0.0, 0.3, 0.6, 0.9]
    assert curve[1]["score"] == curve[3]["score"] == 0.0
    with pytest.raises(ValueError, match="grid is empty"):
        choose_lambda(lambda x: x, grid=())
