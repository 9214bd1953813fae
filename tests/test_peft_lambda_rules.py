"""The experiments' own λ rules against hand-made tables: the share kept and the guarded choice."""

from __future__ import annotations

import pytest

from tools.peft_lab.lambda_rules import choose_lambda_guarded, share_kept


def test_choose_lambda_guarded__best_first_set_among_those_the_guard_allows() -> None:
    # λ -> (target, source, second guarded set); at λ = 1 the references are 0.80 and 0.70.
    table = {0.0: (0.95, 0.60, 0.70), 0.5: (0.90, 0.795, 0.69), 0.8: (0.85, 0.80, 0.71), 1.0: (0.50, 0.80, 0.70)}
    lam, curve = choose_lambda_guarded(lambda x: table[x], grid=(0.0, 0.5, 0.8, 1.0), guard=0.01)
    assert lam == 0.5  # 0.0 loses 20 points of source; 0.5 loses 0.5 and 1 point, inside the guard
    assert [p["allowed"] for p in curve] == [False, True, True, True]
    assert [p["score"] for p in curve] == [0.95, 0.90, 0.85, 0.50] and curve[1]["guarded"] == [0.795, 0.69]
    assert choose_lambda_guarded(lambda x: table[x], grid=(0.0, 0.5, 0.8, 1.0), guard=0.005)[0] == 0.8
    assert choose_lambda_guarded(lambda x: table[x], grid=(0.0, 0.5, 0.8, 1.0), guard=0.5)[0] == 0.0
    assert choose_lambda_guarded(lambda x: (0.5, 0.5), grid=(0.0, 1.0))[0] == 0.0  # ties: the first in grid order
    # Non-inferiority: the lower CI ends of the losses decide, not the point estimates.
    lows = {0.0: (-0.30, -0.02), 0.5: (-0.012, -0.02), 0.8: (-0.009, -0.004)}
    lam, curve = choose_lambda_guarded(lambda x: table[x], grid=(0.0, 0.5, 0.8, 1.0), guard=0.01,
                                       lower_bounds=lambda x: lows[x])
    assert lam == 0.8 and [p["allowed"] for p in curve] == [False, False, True, True]
    assert curve[1]["lower"] == [-0.012, -0.02] and "lower" not in curve[3]  # λ = 1 is the reference itself
    for grid, accuracies, guard in (((0.0, 0.5), lambda x: (1, 1), 0.01), ((0.0, 1.0), lambda x: (1,), 0.01),
                                    ((0.0, 1.0), lambda x: (1, 1), -0.1), ((), lambda x: (1, 1), 0.01)):
        with pytest.raises(ValueError):
            choose_lambda_guarded(accuracies, grid=grid, guard=guard)


def test_share_kept__the_worst_set_decides() -> None:
    assert share_kept([0.9, 0.6], [1.0, 0.8]) == pytest.approx(0.75)
    assert share_kept([0.99, 0.9], [0.9, 0.9]) == pytest.approx(1.0)  # above its reference on one set, level on the other
    assert share_kept([0.5, 0.7], [0.0, 0.8]) == pytest.approx(0.875)  # nothing to lose where the reference is 0
    with pytest.raises(ValueError, match="one of each per set"):
        share_kept([0.5], [0.5, 0.6])
