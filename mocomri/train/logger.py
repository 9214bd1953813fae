"""Run logging: TensorBoard scalars and a ``metrics.jsonl`` for scripts, rank 0 only."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter


class RunLogger:
    """Writes each record to ``metrics.jsonl`` and, when enabled, to TensorBoard under ``tb/``.

    A resumed run appends; records past the resume step from the interrupted attempt are left in
    place and superseded by later lines with the same step (readers keep the last).
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True, enabled: bool = True):
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.jsonl = open(Path(run_dir) / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))

    def log(self, step: int, values: dict[str, Any], kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, **{k: _plain(v) for k, v in values.items()}}
        self.jsonl.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(f"{kind}/{k}", v, step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        if self.enabled and self.writer is not None:
            self.writer.add_text(tag, text, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self.jsonl.close()
        if self.writer is not None:
            self.writer.close()


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def read_metrics(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Reads ``metrics.jsonl``, keeping the last record for each (kind, step)."""
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                latest[(rec["kind"], rec["step"])] = rec
    out = [r for (k, _), r in latest.items() if kind is None or k == kind]
    return sorted(out, key=lambda r: r["step"])
