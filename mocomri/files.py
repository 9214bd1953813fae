"""File helpers every part of mocomri shares: one content digest, one atomic write.

- :func:`file_digest`: the SHA-1 of a file's bytes, the digest of the manifest's ``sha1``
  column, the cache keys, ``summary.json`` and the probe report; :func:`state_dict_digest`, the
  SHA-1 of a network's weights whatever file holds them (a module's base encoder).
- :func:`atomic_path` / :func:`atomic_write`: write to a unique temporary file beside the target
  and ``os.replace`` it into place, so a reader (or another process writing the same file, as
  parallel ablation cells sharing a feature cache do) never sees a half-written file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import torch


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-1 hex digest of a file's bytes."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def state_dict_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-1 over a state dict's keys, dtypes, shapes and values: the same weights give the same
    digest whatever file format they were stored in."""
    # local: the manifest tools use this module's file digest and atomic write, and need no torch
    import torch

    digest = hashlib.sha1()
    for key in sorted(state):
        value = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a unique temporary path beside ``path``; on success it is renamed to ``path``.

    For writers that want a file name (``np.lib.format.open_memmap``, ``np.savez``); on an
    exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Calls ``write(file)`` on a temporary file beside ``path``, syncs it, and renames it to ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
