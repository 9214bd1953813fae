import pytest

from mocomri.train.sampler import ResumableSampler


def _batches(sampler, bs):
    items = list(sampler)
    return [items[i : i + bs] for i in range(0, len(items), bs)]


def test_resumable_sampler__resume_mid_epoch_matches_uninterrupted():
    full = ResumableSampler(50, 8, seed=3)
    full.set_position(2, 0)
    whole = _batches(full, 8)
    resumed = ResumableSampler(50, 8, seed=3)
    resumed.set_position(2, 4)
    assert _batches(resumed, 8) == whole[4:]


def test_resumable_sampler__epochs_differ_and_drop_tail():
    s = ResumableSampler(50, 8, seed=0)
    s.set_position(0)
    e0 = [i for i, _ in s]
    s.set_position(1)
    e1 = [i for i, _ in s]
    assert len(e0) == len(e1) == 48 and len(set(e0)) == 48
    assert e0 != e1


def test_resumable_sampler__ranks_disjoint_and_equal():
    parts = []
    for rank in range(2):
        s = ResumableSampler(50, 8, seed=1, rank=rank, world_size=2)
        s.set_position(0)
        parts.append([i for i, _ in s])
    assert len(parts[0]) == len(parts[1]) == 24
    assert not set(parts[0]) & set(parts[1])


def test_resumable_sampler__too_small_dataset():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ResumableSampler(5, 8)
