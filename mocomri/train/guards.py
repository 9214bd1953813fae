"""Guards that stop a run, keeping its last good checkpoint: a non-finite loss, collapsed embeddings."""

from __future__ import annotations

from pathlib import Path

import torch

from mocomri.errors import MocomriError
from mocomri.train.checkpoint import last_checkpoint, load_checkpoint


class NonFiniteLossError(MocomriError):
    """The loss became NaN or Inf; the run stopped and kept its last good checkpoint."""


class CollapsedRunError(MocomriError):
    """The embeddings collapsed (``train.stop_on_collapse``); the run stopped and kept its last good checkpoint."""


def kept_checkpoint(run_dir: Path) -> str:
    """Names the checkpoint a stopped run leaves to resume from."""
    good = last_checkpoint(run_dir)
    return f"the last good checkpoint is {good} (step {load_checkpoint(good)['step']})" if good else "no checkpoint had been written yet"


class NonFiniteGuard:
    """Records the first step whose loss is not finite, on the device, and raises when looked at.

    The hot loop never waits for the device: :meth:`add` is a device-side ``where``, and only
    :meth:`check`, called at log steps, reads the flag back.
    """

    def __init__(self, device: torch.device, steps_per_epoch: int):
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.steps_per_epoch = steps_per_epoch

    def add(self, step: int, loss: torch.Tensor) -> None:
        self.first_bad_step = torch.where((self.first_bad_step < 0) & ~torch.isfinite(loss), step, self.first_bad_step)

    def check(self, run_dir: Path) -> None:
        """Raises :class:`NonFiniteLossError` naming the first bad step, if there was one."""
        bad = int(self.first_bad_step.item())
        if bad < 0:
            return
        raise NonFiniteLossError(
            f"the loss became NaN/Inf at step {bad + 1} (epoch {bad // self.steps_per_epoch + 1}, "
            f"batch {bad % self.steps_per_epoch + 1}); the run stopped and {kept_checkpoint(run_dir)}. "
            "Lower optim.lr, or try train.precision=fp32."
        )


class CollapseGuard:
    """Tracks since which log step the embedding spread has stayed below ``train.collapse_spread``.

    With ``stop`` (``train.stop_on_collapse``), the run stops once the spread has been below it
    at every log step for ``patience_steps`` steps, and meanwhile writes no periodic checkpoint
    (one written then would not be a good one to go back to). Without ``stop``, a low spread is
    only warned about.
    """

    def __init__(self, threshold: float, patience_steps: int, stop: bool):
        self.threshold = threshold
        self.patience_steps = patience_steps
        self.stop = stop
        self.since: int | None = None  # the first log step of the current stretch below the threshold

    def update(self, step: int, spread: float) -> None:
        if spread >= self.threshold:
            self.since = None
        elif self.since is None:
            self.since = step

    @property
    def holds_checkpoints(self) -> bool:
        return self.stop and self.since is not None

    def stops_run(self, step: int) -> bool:
        return self.holds_checkpoints and step - self.since >= self.patience_steps

    def message(self, step: int, spread: float, kept: str) -> str:
        return (
            f"the embeddings collapsed: their spread was {spread:.3f} at step {step}, below "
            f"train.collapse_spread={self.threshold:g} at every log step since step {self.since} "
            f"(train.collapse_patience_steps={self.patience_steps}); the run stopped and {kept}. Likely causes: "
            "a learning rate too high (lower optim.lr), same-subject masking removing most negatives "
            "(moco.mask_same_subject), or too small a moco.temperature or moco.queue_size. "
            "train.stop_on_collapse=false lets the run go on"
        )
