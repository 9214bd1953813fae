"""Interleaved timing: variants measured round-robin, so that they share the machine's state.

On a shared 2-core machine another process can halve a measurement's speed for seconds at a
time. Timing variants one after the other would hand that slowdown to whichever variant ran
then; timing them round-robin (A, B, C, A, B, C, ...) spreads it across all of them, and the
ratio of two variants within one round compares them under the same load. Ratios are therefore
the median over rounds of the per-round ratio, and times are reported as median and best.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def time_interleaved(
    fns: Mapping[str, Callable[[], object]],
    rounds: int,
    calls_per_round: int | Mapping[str, int] = 1,
    sync: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
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
    sync = sync or (lambda: None)
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            sync()
            out[name].append((time.perf_counter() - start) / calls[name])
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
