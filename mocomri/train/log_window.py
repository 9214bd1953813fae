"""The log window: what the steps between two log steps did, summed on the device until logged."""

from __future__ import annotations

import time

import torch


class LogWindow:
    """Sums of the step outputs between two log steps, kept on the device until logged."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        self.steps = 0
        self.images = 0
        self.wait_s = 0.0
        self.views_s = 0.0  # on a GPU, the time to queue the views' kernels, not to run them
        self.t0 = time.perf_counter()

    def exclude(self, seconds: float) -> None:
        """Leaves time spent outside training (the kNN monitor) out of the window's rates."""
        self.t0 += seconds

    def add(self, out, images: int) -> None:
        vals = torch.stack([out.loss.detach(), out.accuracy.detach(), out.pos_logit.detach(), out.neg_logit.detach()])
        self.sums += vals.double()
        self.steps += 1
        self.images += images

    def flush(self, **extra: float) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        mean = (self.sums / max(self.steps, 1)).tolist()
        record = {
            "loss": mean[0],
            "contrastive_acc": mean[1],
            "pos_logit": mean[2],
            "neg_logit": mean[3],
            "images_per_s": self.images / elapsed,
            "data_wait_frac": self.wait_s / elapsed,
            "views_frac": self.views_s / elapsed,
            **extra,
        }
        self.reset()
        return record
