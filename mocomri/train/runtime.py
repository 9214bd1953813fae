"""Where and how a run executes: device, precision, channels-last, seeding, process group."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Runtime:
    """The resolved execution settings of one process."""

    device: torch.device
    precision: str  # "fp32" | "bf16" | "fp16"
    channels_last: bool
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the forward pass; a no-op in fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)


def cpu_supports_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX-512 BF16 or AMX).

    Without them bf16 autocast on the CPU is emulated and slower than fp32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA (this process's local GPU) when present, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available on this machine")
    return torch.device(name)


# train.precision and train.channels_last: the config checks them against these tuples, which
# is why this module imports nothing of mocomri (the config, the bottom layer, imports it).
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
CHANNELS_LAST: tuple[str, ...] = ("auto", "true", "false")


def select_precision(name: str, device: torch.device, spatial_dims: int = 2) -> str:
    """``auto``: bf16 on CUDA with bf16 support or on CPUs with native bf16, fp16 on older GPUs, else fp32.

    3D encoders on the CPU stay fp32: under bf16 autocast, MONAI's 3D ResNet-18 got a NaN weight
    gradient in ``layer4.1.conv1`` on its first backward (torch 2.14.1, oneDNN, AVX-512 BF16
    EPYC), though the same convolution replayed alone on the saved tensors is finite; the 2D
    encoders train finite in bf16 (see BENCHMARKS.md).
    """
    if name not in PRECISIONS:
        raise ValueError(f"train.precision={name!r} must be one of {', '.join(PRECISIONS)}")
    if name == "fp16" and device.type != "cuda":
        raise ValueError("train.precision='fp16' needs CUDA (use bf16 or fp32 on the CPU)")
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() and spatial_dims == 2 else "fp32"


def select_channels_last(setting: str, device: torch.device, spatial_dims: int) -> bool:
    """``auto``: channels-last for 2D convolutions (CPU and CUDA), the default layout for 3D.

    Chosen from the benchmark suite (``python -m benchmarks.run --quick``; the figures are in
    BENCHMARKS.md): the 2D MoCo step is faster in channels-last, while the 3D ResNet-18 step
    showed no consistent gain, so 3D keeps the contiguous layout.
    """
    if setting not in CHANNELS_LAST:
        choices = f"{', '.join(CHANNELS_LAST[:-1])} or {CHANNELS_LAST[-1]}"
        raise ValueError(f"train.channels_last={setting!r} must be {choices}")
    if setting != "auto":
        return setting == "true"
    return spatial_dims == 2


def memory_format(channels_last: bool, spatial_dims: int) -> torch.memory_format:
    """The layout of the model and its inputs: the one place a channels-last choice becomes one.

    Args:
        channels_last: the runtime's choice (``Runtime.channels_last``, from
            :func:`select_channels_last`).
        spatial_dims: 2 or 3: ``channels_last`` (N, H, W, C in memory) for 2D,
            ``channels_last_3d`` (N, D, H, W, C) for 3D.

    Returns:
        That layout, or ``torch.contiguous_format`` where ``channels_last`` is False.

    Raises:
        ValueError: ``spatial_dims`` other than 2 or 3.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims={spatial_dims} must be 2 or 3")
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


# mallopt(3) parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Keeps memory that PyTorch frees on the CPU in the process, for the next step to reuse.

    PyTorch has no caching allocator for CPU tensors: they come from glibc's malloc, which
    serves every block above a threshold (at most 32 MiB) with a fresh ``mmap`` and returns
    freed memory to the kernel. A training step allocates and frees the same large activations
    every iteration, so the kernel faults in and zeroes their pages every time (page faults per
    step with and without this setting are in BENCHMARKS.md). This switches glibc to its heap only (``M_MMAP_MAX`` = 0) and stops it
    trimming the heap (``M_TRIM_THRESHOLD`` at its largest, 2 GiB), the in-process form of
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``. The process keeps its peak footprint
    instead of shrinking between steps; the peak itself does not grow. DataLoader workers
    forked later inherit the setting.

    Returns:
        True when the policy was applied; False where the C library is not glibc (musl,
        macOS, Windows), which is left as it is.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
        return libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1)) == 1 and ok
    except (OSError, AttributeError):
        return False


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def init_distributed() -> tuple[int, int, int]:
    """Joins the process group that ``torchrun`` describes in the environment, if any.

    Returns:
        (rank, world_size, local_rank); (0, 1, 0) for a plain single-process run.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), local_rank
