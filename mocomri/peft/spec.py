"""What a parameter-efficient module is: its kind, its target layers, its rank and scale, its init seed."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from mocomri.errors import MocomriError

KINDS = ("lora", "ia3")


class PEMError(MocomriError):
    """A module file cannot be used as asked (incompatible modules, wrong base encoder, bad file)."""


@dataclass(frozen=True)
class PEMSpec:
    """The hyper-parameters that make two modules comparable.

    Attributes:
        kind: ``lora`` or ``ia3``.
        targets: ``fnmatch`` patterns over the encoder's module names, e.g. ``layer3.*.conv*``.
        rank: r of LoRA (ignored by (IA)³).
        alpha: LoRA's update is scaled by ``alpha / r`` (ignored by (IA)³).
        init: how LoRA's A is drawn: ``kaiming`` or ``gaussian``.
        seed: seeds LoRA's A.
    """

    kind: str
    targets: tuple[str, ...] = field(default_factory=tuple)
    rank: int = 4
    alpha: float = 8.0
    init: str = "kaiming"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} must be one of {KINDS}")
        if self.kind == "lora" and self.rank <= 0:
            raise ValueError(f"rank={self.rank} must be positive")
        object.__setattr__(self, "targets", tuple(self.targets))


def default_targets(encoder: nn.Module, kind: str) -> tuple[str, ...]:
    """Target patterns for an encoder of the registry.

    LoRA: every convolution of the residual blocks (``layer*.*.conv*``). (IA)³: each block's
    last convolution (input scaled, the ``l_ff`` analogue) and last norm layer, BatchNorm or
    GroupNorm (output scaled, the residual branch before the addition); see
    :mod:`mocomri.peft.ia3` for why.

    Raises:
        ValueError: an unknown kind.
    """
    if kind == "lora":
        return ("layer*.*.conv*",)
    if kind == "ia3":
        names = {name for name, _ in encoder.named_modules()}
        last = "3" if any(n.endswith(".conv3") for n in names) else "2"  # Bottleneck or basic block
        return (f"layer*.*.conv{last}", f"layer*.*.bn{last}")
    raise ValueError(f"kind={kind!r} must be one of {KINDS}")
