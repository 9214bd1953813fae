"""Checkpoints: plain dicts, written atomically, loaded with ``weights_only=True``.

A checkpoint holds ``model`` (the unwrapped MoCo state: both encoders, both projectors and the
queue), ``optimizer``, ``scaler``, ``step``, ``config`` and the RNG states, so that a resumed
run continues exactly where the saved one stopped.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mocomri.files import atomic_write


def atomic_save(obj: Any, path: str | Path) -> None:
    """Writes ``obj`` with ``torch.save`` atomically (:func:`mocomri.files.atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def rng_state() -> dict[str, Any]:
    """The states of every RNG a step consumes (Python, NumPy, torch CPU and CUDA)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        # NumPy's legacy state as plain tensors/ints so weights_only loading accepts it.
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what :func:`rng_state` captured."""
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, state: dict[str, Any], step: int, keep: int = 2) -> Path:
    """Writes ``checkpoints/step_{step:08d}.pt`` and ``checkpoints/last.pt``; keeps ``keep`` periodic ones."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    periodic = ckpt_dir / f"step_{step:08d}.pt"
    atomic_save(state, periodic)
    atomic_save(state, ckpt_dir / "last.pt")
    for old in sorted(ckpt_dir.glob("step_*.pt"))[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return periodic


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint of a run, or None."""
    last = Path(run_dir) / "checkpoints" / "last.pt"
    if last.is_file():
        return last
    steps = sorted(
        (Path(run_dir) / "checkpoints").glob("step_*.pt"),
        key=lambda p: int(re.sub(r"\D", "", p.stem) or 0),
    )
    return steps[-1] if steps else None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Loads a checkpoint with ``weights_only=True`` (no arbitrary code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=True)
