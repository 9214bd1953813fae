"""An encoder with a parameter-efficient module attached: frozen base, trainable module, BatchNorm in eval mode."""

from __future__ import annotations

import copy
import fnmatch

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mocomri.peft.ia3 import IA3, IA3_OUTPUT_LAYERS
from mocomri.peft.lora import LORA_LAYERS, LoRA
from mocomri.files import state_dict_digest
from mocomri.peft.module_file import PEM, BaseEncoder, Head
from mocomri.peft.spec import PEMError, PEMSpec


class PEMEncoder(nn.Module):
    """``encoder`` with its target layers wrapped by LoRA or (IA)³; only the module trains.

    The base encoder's parameters are frozen, and every BatchNorm stays in eval mode whatever
    ``train()`` says: with batch statistics a BatchNorm would renormalise away any scale the
    module puts before it (and the base's running statistics must not drift either).

    Args:
        encoder: the base encoder; its target layers are replaced in place (pass a copy to keep it).
        spec: kind, target patterns, rank, alpha, init and seed.

    Raises:
        ValueError: a pattern that matches no layer the kind can adapt, or a target it cannot.
    """

    def __init__(self, encoder: nn.Module, spec: PEMSpec) -> None:
        super().__init__()
        self.spec = spec
        self.base_sha1 = state_dict_digest(encoder.state_dict())  # before any layer is wrapped
        self.encoder = encoder.requires_grad_(False)
        self.layers = resolve_targets(encoder, spec)
        generator = torch.Generator().manual_seed(spec.seed)
        for name in self.layers:  # sorted, so that the seed gives each layer the same A every time
            base = encoder.get_submodule(name)
            wrapped = (LoRA(base, spec.rank, spec.alpha, spec.init, generator, name) if spec.kind == "lora"
                       else IA3(base, name))
            encoder.set_submodule(name, wrapped)
        self.train(self.training)

    @classmethod
    def from_pem(cls, pem: PEM, encoder: nn.Module) -> PEMEncoder:
        """``encoder`` with ``pem`` attached.

        Raises:
            PEMError: ``encoder`` is not the module's base encoder (its weights' digest differs).
        """
        wrapped = cls(encoder, pem.spec)
        if wrapped.base_sha1 != pem.base.sha1:
            raise PEMError(f"{pem.label} was trained on the encoder with hash {pem.base.sha1[:12]}, "
                           f"not on this one (hash {wrapped.base_sha1[:12]})")
        wrapped.load_module_state(pem.tensors)
        return wrapped

    def to_pem(self, name: str, in_channels: int, width: int, heads: list[Head] | None = None,
               provenance: dict | None = None) -> PEM:
        """The module as a :class:`PEM`; ``name``, ``in_channels``, ``width``: the base architecture."""
        return PEM(self.spec, list(self.layers), BaseEncoder(name, in_channels, width, self.base_sha1),
                   self.module_state(), heads or [], provenance or {})

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def train(self, mode: bool = True) -> PEMEncoder:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, _BatchNorm):
                m.eval()
        return self

    def module_state(self) -> dict[str, Tensor]:
        """The module's tensors, keyed ``<layer>.lora_A``, ``<layer>.lora_B`` or ``<layer>.ia3_scale``."""
        return {f"{layer}.{key}": p.detach().clone()
                for layer in self.layers
                for key, p in self.encoder.get_submodule(layer).named_parameters(recurse=False)}

    @torch.no_grad()
    def load_module_state(self, tensors: dict[str, Tensor]) -> None:
        """Copies a module's tensors in.

        Raises:
            ValueError: the keys or shapes differ from this module's (the message names them).
        """
        own = self.module_state()
        if set(own) != set(tensors):
            missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
            raise ValueError(f"module tensors do not match the targets: missing {missing[:3]}, unexpected {extra[:3]}")
        for key, value in tensors.items():
            if own[key].shape != value.shape:
                raise ValueError(f"module tensor {key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}")
            layer, attr = key.rsplit(".", 1)
            getattr(self.encoder.get_submodule(layer), attr).copy_(value)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """The base architecture with the module folded into its weights, in eval mode.

        Its state dict has the base encoder's keys; in eval mode its outputs equal this
        encoder's up to rounding.
        """
        merged = copy.deepcopy(self.encoder)
        for name in self.layers:
            merged.set_submodule(name, merged.get_submodule(name).folded())
        return merged.requires_grad_(True).eval()


def resolve_targets(encoder: nn.Module, spec: PEMSpec) -> list[str]:
    """The sorted names of the layers that ``spec.targets`` match and ``spec.kind`` can adapt.

    Raises:
        ValueError: no patterns, or a pattern that matches none of those layers.
    """
    if not spec.targets:
        raise ValueError("no target patterns given")
    kinds = LORA_LAYERS if spec.kind == "lora" else (*LORA_LAYERS, *IA3_OUTPUT_LAYERS)
    candidates = [name for name, m in encoder.named_modules() if name and isinstance(m, kinds)]
    chosen: set[str] = set()
    for pattern in spec.targets:
        hits = fnmatch.filter(candidates, pattern)
        if not hits:
            examples = ", ".join(candidates[:6])
            raise ValueError(f"target pattern {pattern!r} matches no layer that {spec.kind} can adapt "
                             f"(such layers: {examples}, ...)")
        chosen.update(hits)
    return sorted(chosen)
