"""The matmul roofline: the best GEMM rate this machine reaches, per precision.

A MoCo step is convolutions and matmuls, which oneDNN (CPU) and cuDNN/cuBLAS (CUDA) lower to
GEMM micro-kernels, so the best large-GEMM rate is the ceiling a step can approach. Two kernels
are tried at several sizes and the best is kept: ``torch.mm`` (MKL or oneDNN's BLAS on the CPU,
cuBLAS on CUDA) and a 1x1 convolution in channels-last, which is a GEMM run by the convolution
library itself. They can differ a lot: on AMD CPUs MKL's fp32 GEMM takes an AVX2 path while
oneDNN's convolutions use AVX-512, so ``torch.mm`` alone read about half of what the step's own
convolutions reached. It is measured in the same process as the steps, so the two see the same
machine and load.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mocomri.timing import device_sync, time_calls

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def matmul_flops_per_s(
    dtype: str, device: torch.device, sizes: tuple[int, ...] = (1024, 2048, 3072), repeats: int = 5, min_time_s: float = 0.2
) -> dict[str, float | int | str]:
    """The best GEMM rate over ``sizes`` and two kernels: ``torch.mm`` of n x n matrices, and a
    1x1 convolution with n input and n output channels over n positions (the same 2n³ FLOPs).

    Each (kernel, size) is warmed up, then timed ``repeats`` times; a timing runs as many calls
    as fill ``min_time_s``. The best timing is kept: contention from other processes only slows
    a GEMM down, so the fastest run is the closest to the machine's capability.

    Args:
        dtype: ``fp32``, ``bf16`` or ``fp16`` (fp16 on CUDA only).
        device: where to run.
        sizes: the sides n to try.
        repeats: timings per kernel and size.
        min_time_s: the shortest timing, to keep timer resolution out of the result.

    Returns:
        ``{"flops_per_s": best rate, "n": the side that reached it, "kernel": "mm" | "conv1x1",
        "by_kernel": {kernel: best rate}}``.

    Raises:
        ValueError: for an unknown ``dtype``, or fp16 on the CPU.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} must be one of {tuple(DTYPES)}")
    if dtype == "fp16" and device.type != "cuda":
        raise ValueError("fp16 matmuls are only measured on CUDA")
    best = {"flops_per_s": 0.0, "n": 0, "kernel": "", "by_kernel": {}}
    sync = device_sync(device)
    for kernel in ("mm", "conv1x1"):
        for n in sizes:
            fn = _gemm(kernel, n, DTYPES[dtype], device)
            flop = 2.0 * n**3
            with torch.no_grad():
                elapsed = time_calls(fn, 1, sync=sync)  # warm-up, and a first estimate
                calls = max(1, int(min_time_s / max(elapsed, 1e-6)))
                for _ in range(repeats):
                    rate = flop / time_calls(fn, calls, sync=sync)
                    best["by_kernel"][kernel] = max(best["by_kernel"].get(kernel, 0.0), rate)
                    if rate > best["flops_per_s"]:
                        best.update(flops_per_s=rate, n=n, kernel=kernel)
    return best


def _gemm(kernel: str, n: int, dtype: torch.dtype, device: torch.device):
    """A call doing 2n³ FLOPs of GEMM with ``kernel``."""
    if kernel == "mm":
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        return lambda: torch.mm(a, b)
    # n positions as a 1 x n image, n channels in and out: (1, n, 1, n) * (n, n, 1, 1)
    x = torch.randn(1, n, 1, n, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    return lambda: F.conv2d(x, w)
