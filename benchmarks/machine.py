"""A description of the machine and software a benchmark ran on, for its report."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import torch


def describe_machine() -> dict:
    """CPU model, cores, memory, accelerator and library versions.

    Returns:
        A flat dict of strings and numbers; missing pieces are ``None``.
    """
    from mocomri.train.runtime import cpu_supports_bf16

    info: dict = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_native_bf16": cpu_supports_bf16(),
        "memory_gib": _memory_gib(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "argv": " ".join(sys.argv),
    }
    for name in ("torchvision", "monai"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    return info


def _cpu_model() -> str | None:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None
