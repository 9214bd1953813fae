"""FLOPs of one training step, counted by :class:`torch.utils.flop_counter.FlopCounterMode`.

The counter sees every matmul and convolution that runs (query forward and backward, key
forward, projector heads, the logits against the queue) and counts 2 FLOPs per multiply-add.
Elementwise work (BatchNorm, ReLU, the optimiser, the momentum update) is not counted: it is
memory-bound, and is what keeps a step below the matmul roofline.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.flop_counter import FlopCounterMode


def count_flops(step: Callable[[], object]) -> int:
    """FLOPs of one call of ``step``.

    The call really runs (and changes weights, queue and optimiser state): the bench counts
    during a warm-up call. The count does not depend on precision or memory format, so one
    count serves every variant of a case; compiled variants reuse their eager twin's.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())

