"""LoRA on a convolution or a linear layer (Hu et al. 2021, arXiv:2106.09685).

``h = base(x) + (alpha / r) · B(A(x))``. For ``nn.Linear``, A: in -> r and B: r -> out are
matrices. For ``nn.Conv2d``/``nn.Conv3d``, A is a convolution with the base layer's kernel,
stride, padding, dilation and padding mode mapping in -> r channels, and B a 1x1 convolution
r -> out: a pointwise map after a convolution is one convolution with the same geometry, so
``ΔW[o, i, ...] = (alpha / r) · Σ_r B[o, r] · A[r, i, ...]`` folds into the base weight exactly.
B starts at zero, so a fresh module is the identity.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LORA_INITS = ("kaiming", "gaussian")
LORA_LAYERS = (nn.Linear, nn.Conv2d, nn.Conv3d)


class LoRA(nn.Module):
    """A frozen base layer plus a trainable low-rank update.

    Args:
        base: the layer to adapt (``nn.Linear``, ``nn.Conv2d`` or ``nn.Conv3d``, groups 1).
        rank: r, the rank of the update.
        alpha: the update is scaled by ``alpha / r``.
        init: ``kaiming`` (A as ``nn.Linear``'s default, Kaiming-uniform with a=√5, as in the
            LoRA reference code) or ``gaussian`` (A ~ N(0, 1/r²), as in HF peft).
        generator: draws A; seeded by the caller so that a module records its init seed.
        name: the layer's name in its encoder, for error messages.

    Raises:
        ValueError: an unsupported layer, a grouped convolution, or a non-positive rank.

    Shape:
        lora_A: (r, in) or (r, in, *kernel)   lora_B: (out, r)
    """

    def __init__(self, base: nn.Module, rank: int, alpha: float, init: str = "kaiming",
                 generator: torch.Generator | None = None, name: str = "") -> None:
        super().__init__()
        if not isinstance(base, LORA_LAYERS):
            raise ValueError(f"LoRA target {name!r} is a {type(base).__name__}; LoRA adapts "
                             f"{', '.join(t.__name__ for t in LORA_LAYERS)}")
        if isinstance(base, nn.Conv2d | nn.Conv3d) and base.groups != 1:
            raise ValueError(f"LoRA target {name!r} is a grouped convolution (groups={base.groups}); "
                             "only groups=1 is supported")
        if rank <= 0:
            raise ValueError(f"rank={rank} must be positive")
        if init not in LORA_INITS:
            raise ValueError(f"init={init!r} must be one of {LORA_INITS}")
        self.base = base
        self.rank = rank
        self.alpha = alpha
        weight = base.weight  # (out, in) or (out, in, *kernel)
        out_features, in_features, kernel = weight.shape[0], weight.shape[1], weight.shape[2:]
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, *kernel, dtype=weight.dtype, device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, dtype=weight.dtype, device=weight.device))
        with torch.no_grad():
            if init == "kaiming":
                nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=generator)
            else:
                nn.init.normal_(self.lora_A, std=1.0 / rank, generator=generator)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta_weight(self) -> Tensor:
        """ΔW = (alpha/r) · B A, in the base weight's shape. Shape: (out, in, *kernel)."""
        # einsum letters: o out, r rank, i in, k the flattened kernel
        a = self.lora_A.flatten(2) if self.lora_A.dim() > 2 else self.lora_A.unsqueeze(-1)  # (r, i, k)
        delta = torch.einsum("or,rik->oik", self.lora_B, a)  # (o, i, k)
        return self.scale * delta.reshape(self.base.weight.shape)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, in) or (B, in, *S) -> (B, out) or (B, out, *S')
        if isinstance(self.base, nn.Linear):
            update = F.linear(F.linear(x, self.lora_A), self.lora_B)
        else:
            # _conv_forward applies the base layer's stride, padding, dilation and padding mode
            h = self.base._conv_forward(x, self.lora_A, None)  # (B, r, *S')
            pointwise = self.lora_B.reshape(*self.lora_B.shape, *(1,) * (h.dim() - 2))  # (out, r, 1, ...)
            update = _pointwise(h, pointwise)  # (B, out, *S')
        return self.base(x) + self.scale * update

    @torch.no_grad()
    def folded(self) -> nn.Module:
        """The base layer with ΔW added to its weight (a new module; this one is unchanged)."""
        merged = copy.deepcopy(self.base)
        merged.weight.add_(self.delta_weight())
        return merged


def _pointwise(h: Tensor, weight: Tensor) -> Tensor:
    """A 1x1 (x1) convolution. Shape: h: (B, r, *S)  weight: (out, r, 1, ...) -> (B, out, *S)."""
    return F.conv2d(h, weight) if h.dim() == 4 else F.conv3d(h, weight)
