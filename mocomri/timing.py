"""Timing on a shared machine: device sync, warm-up then timed calls, round-robin rounds, paired
ratios, and a step fed by a source as training is fed by its loader.

``mocomri bench`` (:mod:`mocomri.train.speed`), the benchmark suite (``benchmarks/``) and the
lab's timings (``tools/bench_*``) all time with these, so that their figures mean the same.

On a shared 2-core machine another process can halve a measurement's speed for seconds at a
time. Timing variants one after the other would hand that slowdown to whichever variant ran
then; timing them round-robin (A, B, C, A, B, C, ...) spreads it across all of them, and the
ratio of two variants within one round compares them under the same load. Ratios are therefore
the median over rounds of the per-round ratio, and times are reported as median and best.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch

Sync = Callable[[], None]
Item = TypeVar("Item")
Name = TypeVar("Name", bound=Hashable)


def _no_sync() -> None:
    """Nothing to wait for: CPU ops have finished when they return."""


def device_sync(device: torch.device | str) -> Sync:
    """A function that waits for the work queued on ``device``.

    CUDA kernels run asynchronously: a clock read right after a call measures the launches, not
    the work, so every timing syncs the device before it starts and after it ends. On the CPU
    the function does nothing.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return _no_sync


def time_calls(fn: Callable[[], object], calls: int, warmup: int = 0, sync: Sync | None = None) -> float:
    """Seconds per call over ``calls`` consecutive calls of ``fn``, after ``warmup`` untimed ones.

    Args:
        fn: what to time.
        calls: timed calls; the timing is divided by it.
        warmup: untimed calls first (allocator, oneDNN and cuDNN warm-up; compilation).
        sync: waits for the device (:func:`device_sync`); None on the CPU.

    Raises:
        ValueError: ``calls`` below 1 or ``warmup`` below 0.
    """
    if calls < 1 or warmup < 0:
        raise ValueError(f"calls={calls} must be at least 1 and warmup={warmup} at least 0")
    sync = sync or _no_sync
    for _ in range(warmup):
        fn()
    sync()  # the warm-up's queued work is not part of the timing
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - start) / calls


def time_interleaved(
    fns: Mapping[Name, Callable[[], object]],
    rounds: int,
    calls_per_round: int | Mapping[Name, int] = 1,
    sync: Sync | None = None,
) -> dict[Name, list[float]]:
    """Seconds per call of each function, once per round, the functions taking turns.

    Args:
        fns: name -> function to time (already warmed up).
        rounds: how many times each function is timed.
        calls_per_round: calls per timing (one number, or one per name); the timing is divided
            by it.
        sync: waits for the device; called before starting and after each timing.

    Returns:
        name -> ``rounds`` seconds-per-call figures, in round order.

    Raises:
        ValueError: if ``rounds`` or a call count is not positive.
    """
    if rounds <= 0:
        raise ValueError(f"rounds={rounds} must be positive")
    calls = calls_per_round if isinstance(calls_per_round, Mapping) else {name: calls_per_round for name in fns}
    if any(calls[name] <= 0 for name in fns):
        raise ValueError(f"calls_per_round={dict(calls)} must be positive")
    out: dict[Name, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            out[name].append(time_calls(fn, calls[name], sync=sync))
    return out


def paired_ratio(baseline: list[float], other: list[float]) -> float:
    """The median over rounds of ``baseline[r] / other[r]``: how many times faster ``other`` is
    than ``baseline``, each round comparing the two under the same load.

    Raises:
        ValueError: if the lists differ in length or are empty.
    """
    if len(baseline) != len(other) or not baseline:
        raise ValueError(f"need two equal, non-empty lists of timings, got {len(baseline)} and {len(other)}")
    return statistics.median(b / o for b, o in zip(baseline, other))


def summary(seconds: list[float]) -> dict[str, float]:
    """``{"median_ms", "best_ms"}`` of a list of per-call timings."""
    return {"median_ms": 1e3 * statistics.median(seconds), "best_ms": 1e3 * min(seconds)}


@dataclass(frozen=True)
class FedTiming:
    """What :func:`time_fed` measured."""

    steps: int  # timed iterations
    seconds: float  # wall time of the timed iterations
    wait_s: float  # the part of it spent waiting for the source's next item

    @property
    def wait_frac(self) -> float:
        return self.wait_s / self.seconds


def time_fed(
    source: Iterator[Item],
    step: Callable[[Item], object],
    steps: int,
    warmup: int = 0,
    sync: Sync | None = None,
    min_seconds: float = 0.0,
) -> FedTiming:
    """A step fed by a source, as a training loop is fed by its loader: each iteration waits for
    ``next(source)``, then calls ``step`` on it.

    Args:
        source: the items (batches, say); must not run out.
        step: what each item goes through.
        steps: timed iterations, after ``warmup`` untimed ones.
        warmup: untimed iterations first.
        sync: waits for the device; None on the CPU.
        min_seconds: keeps timing past ``steps`` iterations until this long has passed: for a
            source whose speed is not known beforehand.

    Returns:
        The timed iterations, their wall time and the time spent in ``next(source)``: where the
        source is a DataLoader, the time the step waited for data.

    Raises:
        ValueError: ``steps`` below 1 or ``warmup`` below 0.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps={steps} must be at least 1 and warmup={warmup} at least 0")
    sync = sync or _no_sync
    for _ in range(warmup):
        step(next(source))
    sync()
    done, wait = 0, 0.0
    start = time.perf_counter()
    while done < steps or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        item = next(source)
        wait += time.perf_counter() - t
        step(item)
        done += 1
    sync()
    return FedTiming(steps=done, seconds=time.perf_counter() - start, wait_s=wait)
