"""The matmul roofline: the FLOP/s a square ``torch.mm`` reaches on this machine, per precision.

A MoCo step is convolutions and matmuls, which oneDNN (CPU) and cuDNN/cuBLAS (CUDA) lower to
the same GEMM micro-kernels, so the best large-matmul rate is the ceiling a step can approach.
It is measured in the same process as the steps, so the two see the same machine and load.
"""

from __future__ import annotations

import time

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def matmul_flops_per_s(
    dtype: str, device: torch.device, sizes: tuple[int, ...] = (1024, 2048, 3072), repeats: int = 5, min_time_s: float = 0.2
) -> dict[str, float | int]:
    """The best rate of ``C = A @ B`` for n x n matrices over ``sizes``.

    Each size is warmed up, then timed ``repeats`` times; a timing runs as many matmuls as fill
    ``min_time_s``. The best timing is kept: contention from other processes only slows a
    matmul down, so the fastest run is the closest to the machine's capability.

    Args:
        dtype: ``fp32``, ``bf16`` or ``fp16`` (fp16 on CUDA only).
        device: where to run.
        sizes: matrix sides to try.
        repeats: timings per size.
        min_time_s: the shortest timing, to keep timer resolution out of the result.

    Returns:
        ``{"flops_per_s": best rate, "n": the side that reached it}``.

    Raises:
        ValueError: for an unknown ``dtype``, or fp16 on the CPU.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} must be one of {tuple(DTYPES)}")
    if dtype == "fp16" and device.type != "cuda":
        raise ValueError("fp16 matmuls are only measured on CUDA")
    best = {"flops_per_s": 0.0, "n": 0}
    for n in sizes:
        a = torch.randn(n, n, device=device).to(DTYPES[dtype])
        b = torch.randn(n, n, device=device).to(DTYPES[dtype])
        flop = 2.0 * n**3
        elapsed = _time(lambda: torch.mm(a, b), device, 1)  # warm-up, and a first estimate
        calls = max(1, int(min_time_s / max(elapsed, 1e-6)))
        for _ in range(repeats):
            elapsed = _time(lambda: torch.mm(a, b), device, calls) / calls
            if flop / elapsed > best["flops_per_s"]:
                best = {"flops_per_s": flop / elapsed, "n": n}
    return best


def _time(fn, device: torch.device, calls: int) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
