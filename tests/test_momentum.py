from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from mocomri.models.momentum import constant_momentum, cosine_momentum, momentum_update


def _pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 2))
    momentum = copy.deepcopy(base)
    for p in momentum.parameters():
        p.data.normal_()  # a key encoder that has drifted from the query encoder
    return base, momentum


def test_momentum_update__m0_copies_base():
    base, momentum = _pair()
    momentum_update(base, momentum, 0.0)
    for p_q, p_k in zip(base.parameters(), momentum.parameters()):
        assert torch.equal(p_k, p_q)


def test_momentum_update__m1_freezes_momentum_encoder():
    base, momentum = _pair()
    before = [p.clone() for p in momentum.parameters()]
    momentum_update(base, momentum, 1.0)
    for p_k, old in zip(momentum.parameters(), before):
        assert torch.equal(p_k, old)


def test_momentum_update__matches_formula():
    base, momentum = _pair()
    expected = [
        0.9 * p_k.detach().double() + 0.1 * p_q.detach().double()
        for p_q, p_k in zip(base.parameters(), momentum.parameters())
    ]
    momentum_update(base, momentum, 0.9)
    for p_k, want in zip(momentum.parameters(), expected):
        torch.testing.assert_close(p_k.double(), want, rtol=1e-6, atol=1e-6)


def test_momentum_update__leaves_buffers_and_base_alone():
    base, momentum = _pair()
    base[1].running_mean.fill_(5.0)
    base[1].num_batches_tracked.fill_(9)
    momentum[1].running_mean.fill_(-1.0)
    base_before = copy.deepcopy(base.state_dict())
    momentum_update(base, momentum, 0.5)
    assert torch.equal(momentum[1].running_mean, torch.full((3,), -1.0))
    assert int(momentum[1].num_batches_tracked) == 0
    for name, value in base.state_dict().items():
        assert torch.equal(value, base_before[name]), name


def test_momentum_update__records_no_graph():
    base, momentum = _pair()
    momentum_update(base, momentum, 0.5)
    assert all(p.grad_fn is None for p in momentum.parameters())


@pytest.mark.parametrize("m", [-0.1, 1.5])
def test_momentum_update__m_outside_unit_interval_raises(m):
    base, momentum = _pair()
    with pytest.raises(ValueError, match=f"m={m} must be in"):
        momentum_update(base, momentum, m)


def test_momentum_update__mismatched_modules_raise():
    with pytest.raises(ValueError, match="2 parameters but momentum_encoder has 4"):
        momentum_update(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), 0.5)


def test_cosine_momentum__exact_values():
    assert cosine_momentum(0.0, 0.99) == pytest.approx(0.99, abs=1e-15)
    assert cosine_momentum(0.5, 0.99) == pytest.approx(0.995, abs=1e-15)
    assert cosine_momentum(1.0, 0.99) == 1.0
    # a quarter of the way: 1 - 0.01 * (cos(pi/4) + 1) / 2
    assert cosine_momentum(0.25, 0.99) == pytest.approx(1 - 0.01 * (math.sqrt(0.5) + 1) / 2, abs=1e-15)


def test_cosine_momentum__rises_monotonically():
    values = [cosine_momentum(i / 20, 0.9) for i in range(21)]
    assert all(a < b for a, b in zip(values, values[1:]))


def test_constant_momentum__is_base_throughout():
    assert [constant_momentum(t, 0.999) for t in (0.0, 0.5, 1.0)] == [0.999, 0.999, 0.999]


@pytest.mark.parametrize("schedule", [constant_momentum, cosine_momentum])
def test_schedules__invalid_inputs_raise(schedule):
    with pytest.raises(ValueError, match=r"t=1.2 must be in \[0, 1\]"):
        schedule(1.2, 0.99)
    with pytest.raises(ValueError, match=r"base=-0.5 must be in \[0, 1\]"):
        schedule(0.5, -0.5)
