"""Checks on config values, each raising a one-line ``ConfigError`` that names the dotted key.

Every config section calls these from its ``validate()``, which runs when the config is
loaded, before any data is read or any run directory is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mocomri.errors import ConfigError


def choice(key: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: expected one of {', '.join(map(repr, allowed))}")


def at_least(key: str, value: float, low: float) -> None:
    if not value >= low:
        raise ConfigError(f"{key}={value!r}: must be at least {low}")


def positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key}={value!r}: must be positive")


def in_range(key: str, value: float, low: float, high: float, high_open: bool = False) -> None:
    ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        raise ConfigError(f"{key}={value!r}: must be in [{low}, {high}{')' if high_open else ']'}")


def bounds(key: str, value: Sequence[float] | None, low: float | None = None, high: float | None = None) -> None:
    """A ``[min, max]`` pair with ``min <= max``, inside ``[low, high]`` where given."""
    if value is None:
        return
    if len(value) != 2 or not value[0] <= value[1]:
        raise ConfigError(f"{key}={list(value)!r}: expected [min, max] with min <= max")
    if (low is not None and value[0] < low) or (high is not None and value[1] > high):
        raise ConfigError(f"{key}={list(value)!r}: must lie within [{low}, {high}]")
