"""mocomri/timing.py: what each timing counts, read off a fake clock that only the timed work moves."""

from __future__ import annotations

import itertools
import types

import pytest
import torch

from mocomri import timing
from mocomri.timing import FedTiming, device_sync, paired_ratio, time_calls, time_fed, time_interleaved


class FakeClock:
    """``perf_counter`` for :mod:`mocomri.timing`: reading it costs nothing; work advances it."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=fake.perf_counter))
    return fake


def test_time_calls__warmup_untimed_and_device_synced_around_the_timed_calls(clock):
    events, costs = [], iter([100.0, 100.0, 1.0, 2.0, 3.0])  # two slow warm-up calls, then three timed ones

    def fn():
        events.append("call")
        clock.spend(next(costs))

    assert time_calls(fn, 3, warmup=2, sync=lambda: events.append("sync")) == pytest.approx(2.0)
    assert events == ["call", "call", "sync", "call", "call", "call", "sync"]


def test_time_calls__rejects_no_calls():
    with pytest.raises(ValueError, match="calls=0"):
        time_calls(lambda: None, 0)
    with pytest.raises(ValueError, match="warmup=-1"):
        time_calls(lambda: None, 1, warmup=-1)


def test_time_interleaved__functions_take_turns_each_round(clock):
    order = []
    fns = {"a": lambda: (order.append("a"), clock.spend(1.0)), "b": lambda: (order.append("b"), clock.spend(3.0))}
    times = time_interleaved(fns, rounds=2, calls_per_round={"a": 2, "b": 1})
    assert order == ["a", "a", "b", "a", "a", "b"]
    assert times == {"a": [1.0, 1.0], "b": [3.0, 3.0]}  # seconds per call, one figure per round
    with pytest.raises(ValueError, match="rounds=0"):
        time_interleaved({"a": lambda: None}, rounds=0)


def test_paired_ratio__compares_within_rounds():
    # A slow round (x10 load) hits both: the per-round ratio stays 2.
    assert paired_ratio([2.0, 20.0, 2.0], [1.0, 10.0, 1.0]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_ratio([1.0], [1.0, 2.0])


def test_time_fed__splits_the_wait_for_the_source_from_the_step(clock):
    def source():
        for i in itertools.count():
            clock.spend(2.0)  # waiting for the batch
            yield i

    seen = []

    def step(item):
        seen.append(item)
        clock.spend(1.0)

    result = time_fed(source(), step, steps=3, warmup=1)
    assert seen == [0, 1, 2, 3]  # the warm-up item is stepped on, untimed
    assert result == FedTiming(steps=3, seconds=9.0, wait_s=6.0)
    assert result.wait_frac == pytest.approx(2 / 3)


def test_time_fed__min_seconds_keeps_timing_past_the_steps(clock):
    result = time_fed(itertools.count(), lambda _: clock.spend(1.0), steps=1, min_seconds=4.5)
    assert result.steps == 5 and result.seconds == 5.0
    with pytest.raises(ValueError, match="steps=0"):
        time_fed(itertools.count(), lambda _: None, steps=0)


def test_device_sync__nothing_to_wait_for_on_the_cpu():
    # CPU ops have finished when they return: the CPU's sync is the shared no-op, not a CUDA call.
    assert device_sync("cpu") is device_sync(torch.device("cpu"))
    assert device_sync("cpu")() is None
