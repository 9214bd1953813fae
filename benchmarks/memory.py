"""Peak memory of a benchmark case: CUDA allocator statistics, or the process's peak RSS on the CPU.

On CUDA the peak is ``torch.cuda.max_memory_allocated`` since ``reset_peak_memory_stats``,
less what was allocated before the case was built.

On the CPU there is no allocator with statistics, so the peak is the growth of the process's
resident set: before a case is built, freed heap memory is handed back to the kernel
(``gc.collect()`` then glibc's ``malloc_trim(0)``), the kernel's high-water mark is reset
(writing ``5`` to ``/proc/self/clear_refs``, Linux >= 4.0) and the resident set read
(``VmRSS``); the case's peak is ``VmHWM - VmRSS`` after its steps. That covers everything the
case holds (both encoders, the queue, gradients, optimiser state, activations, oneDNN
workspaces). Where ``clear_refs`` cannot be written the high-water mark cannot be reset, and the
peak is ``None`` rather than a number that belongs to an earlier case.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class PeakMemory:
    """Measures the peak memory of what runs between :meth:`start` and :meth:`stop`.

    Args:
        device: the device the case runs on.

    Example:
        ``pm.start(); build_and_run(); peak_bytes = pm.stop()``
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._baseline: int | None = None

    def start(self) -> None:
        """Frees what can be freed and resets the high-water mark."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
            return
        _malloc_trim()
        self._baseline = _read_status_kb("VmRSS") * 1024 if _reset_high_water_mark() else None

    def stop(self) -> int | None:
        """The peak, in bytes, since :meth:`start`; None where it cannot be measured."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device)) - self._baseline
        if self._baseline is None:
            return None
        return max(_read_status_kb("VmHWM") * 1024 - self._baseline, 0)


def cpu_method() -> str:
    """How CPU peaks are measured on this machine, for the report."""
    if _CLEAR_REFS.exists() and _reset_high_water_mark():
        return "peak RSS growth (VmHWM reset via /proc/self/clear_refs after malloc_trim)"
    return "unavailable (cannot reset the RSS high-water mark)"


def _reset_high_water_mark() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _read_status_kb(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in {_STATUS}")


def _malloc_trim() -> None:
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        pass
