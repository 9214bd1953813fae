import math

import pytest

from mocomri.train.lr_schedule import scaled_lr, warmup_cosine_lr


def test_scaled_lr__linear_rule():
    assert scaled_lr(0.06, 512) == pytest.approx(0.12)


def test_warmup_cosine_lr__exact_points():
    # warm-up: (step+1)/(warmup+1) of the peak
    assert warmup_cosine_lr(0, 100, 9, 1.0) == pytest.approx(0.1)
    assert warmup_cosine_lr(8, 100, 9, 1.0) == pytest.approx(0.9)
    # end of warm-up: peak; halfway through the cosine: half way to the floor
    assert warmup_cosine_lr(9, 100, 9, 1.0) == pytest.approx(1.0)
    assert warmup_cosine_lr(9 + 45.5, 100, 9, 1.0, min_ratio=0.2) == pytest.approx(0.6)
    assert warmup_cosine_lr(100, 100, 9, 1.0, min_ratio=0.2) == pytest.approx(0.2)
    mid = 9 + 91 / 4
    assert warmup_cosine_lr(mid, 100, 9, 2.0) == pytest.approx(1.0 + math.cos(math.pi / 4))


def test_warmup_cosine_lr__rejects_empty_run():
    with pytest.raises(ValueError, match="total_steps=0"):
        warmup_cosine_lr(0, 0, 0, 1.0)
