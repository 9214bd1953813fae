"""A trained module on disk: one safetensors file, its tensors plus a JSON record of where it came from.

Tensors: ``module.<layer>.lora_A|lora_B|ia3_scale`` and ``head.<i>.weight|bias`` (no pickle).
The safetensors metadata key ``mocomri.pem`` holds the JSON: the :class:`PEMSpec`, the
resolved target layers, the base encoder (architecture and :func:`mocomri.files.state_dict_digest`), each
head's label names, and the provenance (training objective, manifest and its SHA-1, or the
composition and its inputs).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from mocomri.files import atomic_path
from mocomri.peft.spec import PEMError, PEMSpec

FORMAT = "mocomri.pem/1"
_META_KEY = "mocomri.pem"


@dataclass
class Head:
    """A linear task head on the pooled features.

    Shape:
        weight: (K, F)  bias: (K,)  with K = len(labels)
    """
    labels: tuple[str, ...]
    weight: Tensor
    bias: Tensor


@dataclass
class BaseEncoder:
    """The encoder a module belongs to: architecture and a digest of its weights."""

    name: str
    in_channels: int
    width: int
    sha1: str  # state_dict_digest of its state dict


@dataclass
class PEM:
    """A parameter-efficient module with its heads and provenance.

    Attributes:
        spec: kind, target patterns, rank, alpha, init, seed.
        layers: the layers the targets resolved to on the base encoder.
        base: the base encoder.
        tensors: the module's tensors, keyed as :meth:`PEMEncoder.module_state` keys them.
        heads: task heads; modules trained with the MoCo objective have none.
        provenance: how it was made (training: objective, manifest, manifest_sha1, steps; composition:
            operation, lambda, inputs).
        path: the file it was read from, for messages.
    """
    spec: PEMSpec
    layers: list[str]
    base: BaseEncoder
    tensors: dict[str, Tensor]
    heads: list[Head] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    @property
    def label(self) -> str:
        """How messages name this module: its file, else its operation."""
        return self.path or str(self.provenance.get("operation", "an unsaved module"))


def save_pem(pem: PEM, path: str | Path) -> Path:
    """Writes ``pem`` atomically to ``path`` (a safetensors file); returns the path."""

    path = Path(path)
    tensors = {f"module.{k}": v.detach().cpu().contiguous() for k, v in pem.tensors.items()}
    for i, head in enumerate(pem.heads):
        tensors[f"head.{i}.weight"] = head.weight.detach().cpu().contiguous()
        tensors[f"head.{i}.bias"] = head.bias.detach().cpu().contiguous()
    record = {
        "format": FORMAT,
        "spec": dataclasses.asdict(pem.spec),
        "layers": pem.layers,
        "base": dataclasses.asdict(pem.base),
        "heads": [{"labels": list(h.labels)} for h in pem.heads],
        "provenance": pem.provenance,
    }
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(record, sort_keys=True)})
    return path


def load_pem(path: str | Path) -> PEM:
    """Reads a module file written by :func:`save_pem`.

    Raises:
        FileNotFoundError: no such file.
        PEMError: the file is not a mocomri module file (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"module file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for a file of another format
        raise PEMError(f"{path}: not a safetensors module file ({e})") from None
    if _META_KEY not in meta:
        raise PEMError(f"{path}: a safetensors file without mocomri module metadata")
    record = json.loads(meta[_META_KEY])
    if record.get("format") != FORMAT:
        raise PEMError(f"{path}: module format {record.get('format')!r}, expected {FORMAT!r}")
    spec = record["spec"]
    heads = [Head(tuple(h["labels"]), tensors[f"head.{i}.weight"], tensors[f"head.{i}.bias"])
             for i, h in enumerate(record["heads"])]
    return PEM(
        spec=PEMSpec(**{**spec, "targets": tuple(spec["targets"])}),
        layers=list(record["layers"]),
        base=BaseEncoder(**record["base"]),
        tensors={k.removeprefix("module."): v for k, v in tensors.items() if k.startswith("module.")},
        heads=heads,
        provenance=record["provenance"],
        path=str(path),
    )
