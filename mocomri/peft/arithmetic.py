"""Module arithmetic: λ-addition, negation and analogy (Zhang et al. 2023, arXiv:2306.14870).

The definitions are those of the paper's released code (``merge.py``, ``negation.py``,
``analogy.py`` of SJTU-LIT/PEM_composition):

- a linear combination ``Σ wᵢ θᵢ`` combines LoRA's A and B **separately**
  (``A = Σ wᵢ Aᵢ``, ``B = Σ wᵢ Bᵢ``, so ΔW is not ``Σ wᵢ ΔWᵢ``: it has cross terms), and
  (IA)³'s scales as deviations from the identity, ``l = 1 + Σ wᵢ (lᵢ − 1)``; with weights that
  sum to one that is the weighted mean ``Σ wᵢ lᵢ``;
- addition: ``λ θ₁ ⊕ (1 − λ) θ₂``;
- negation: LoRA ``B → −B`` (A unchanged, so ΔW → −ΔW); (IA)³ ``l → 2 − l``
  (``h + (l − 1)h`` becomes ``h − (l − 1)h``);
- analogy: ``θ_target_cls = λ θ_source_cls ⊕ (1 − λ)(θ_target_ssl ⊖ θ_source_ssl)`` where
  ``θ₁ ⊖ θ₂ = θ₁ ⊕ (−θ₂)`` with unit weights; i.e. the combination of
  ``(θ_source_cls, θ_target_ssl, −θ_source_ssl)`` with weights ``(λ, 1 − λ, 1 − λ)``. For (IA)³
  this is ``(1 − λ) + λ l_cls + (1 − λ)(l_tgt − l_src)``, the released code's formula.

Task heads: addition merges heads of the same task (same label names) with the same λ and keeps
the others; negation drops them (a negated module no longer solves its task); analogy keeps the
source classifier's heads, as the released code does.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import torch

from mocomri.peft.module_file import PEM, Head
from mocomri.peft.spec import PEMError

# Fields that must agree for modules to be composed; a different init seed only warns.
_MUST_MATCH = {
    "base encoder hash": lambda p: p.base.sha1,
    "base architecture": lambda p: (p.base.name, p.base.in_channels, p.base.width),
    "kind": lambda p: p.spec.kind,
    "targets": lambda p: tuple(p.layers),
    "rank": lambda p: p.spec.rank if p.spec.kind == "lora" else None,
    "alpha": lambda p: p.spec.alpha if p.spec.kind == "lora" else None,
}


def check_compatible(pems: Sequence[PEM]) -> None:
    """Raises unless all modules share base encoder, kind, target layers, rank and alpha.

    Raises:
        PEMError: naming the two files and the differing field.

    Warns:
        UserWarning: the modules were initialised from different seeds (composable, but LoRA
            modules from different A's do not share a subspace, which the paper assumes).
    """
    first = pems[0]
    for other in pems[1:]:
        for field, get in _MUST_MATCH.items():
            if get(first) != get(other):
                raise PEMError(f"cannot compose {first.label} and {other.label}: their {field} differs "
                               f"({get(first)} vs {get(other)})")
        if first.spec.seed != other.spec.seed:
            warnings.warn(f"{first.label} and {other.label} were initialised from different seeds "
                          f"({first.spec.seed} vs {other.spec.seed})", stacklevel=2)


def negate(pem: PEM) -> PEM:
    """−θ: LoRA B → −B; (IA)³ l → 2 − l. Heads are dropped."""
    if pem.spec.kind == "lora":
        tensors = {k: -v if k.endswith(".lora_B") else v.clone() for k, v in pem.tensors.items()}
    else:
        tensors = {k: 2.0 - v for k, v in pem.tensors.items()}
    return dataclasses.replace(pem, tensors=tensors, heads=[], path=None,
                               provenance={"operation": "negate", "inputs": [_describe(pem)]})


def combine(pems: Sequence[PEM], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """The module tensors of ``Σ wᵢ θᵢ`` (see the module docstring); heads are not touched.

    Raises:
        PEMError: incompatible modules, or a weight count that differs from the module count.
    """
    if len(pems) != len(weights) or not pems:
        raise PEMError(f"{len(pems)} modules and {len(weights)} weights: give one weight per module")
    check_compatible(pems)
    out = {}
    for key in pems[0].tensors:
        if pems[0].spec.kind == "lora":
            out[key] = sum(w * p.tensors[key] for p, w in zip(pems, weights))
        else:
            out[key] = 1.0 + sum(w * (p.tensors[key] - 1.0) for p, w in zip(pems, weights))
    return out


def add(first: PEM, second: PEM, lam: float) -> PEM:
    """λ θ₁ ⊕ (1 − λ) θ₂, heads of the same task merged with the same λ."""
    tensors = combine([first, second], [lam, 1.0 - lam])
    heads = _merge_heads(first.heads, second.heads, lam)
    return dataclasses.replace(first, tensors=tensors, heads=heads, path=None,
                               provenance={"operation": "add", "lambda": lam,
                                           "inputs": [_describe(first), _describe(second)]})


def analogy(source_cls: PEM, target_ssl: PEM, source_ssl: PEM, lam: float) -> PEM:
    """λ θ_source_cls ⊕ (1 − λ)(θ_target_ssl ⊖ θ_source_ssl); the source classifier's heads."""
    negated = negate(source_ssl)
    negated.path = f"-{source_ssl.label}"
    tensors = combine([source_cls, target_ssl, negated], [lam, 1.0 - lam, 1.0 - lam])
    heads = [Head(h.labels, h.weight.clone(), h.bias.clone()) for h in source_cls.heads]
    return dataclasses.replace(source_cls, tensors=tensors, heads=heads, path=None,
                               provenance={"operation": "analogy", "lambda": lam,
                                           "inputs": [_describe(p) for p in (source_cls, target_ssl, source_ssl)]})


def _merge_heads(first: Sequence[Head], second: Sequence[Head], lam: float) -> list[Head]:
    merged = []
    by_labels = {h.labels: h for h in second}
    for head in first:
        other = by_labels.pop(head.labels, None)
        if other is None:
            merged.append(head)
        else:
            merged.append(Head(head.labels, lam * head.weight + (1 - lam) * other.weight,
                               lam * head.bias + (1 - lam) * other.bias))
    return merged + list(by_labels.values())


def _describe(pem: PEM) -> dict:
    """What a composed module records about an input."""
    return {"path": pem.path, "provenance": pem.provenance}
