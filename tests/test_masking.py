"""Tests for mocomri.train.masking: the share of the queue that same-subject masking removes."""

from __future__ import annotations

import numpy as np
import pytest

from mocomri.train.masking import expected_masked_share, plan_masking


@pytest.mark.parametrize(
    "sizes,share",
    [([2, 2], 0.5), ([1] * 100, 0.01), ([97, 1, 1, 1], 0.9412), ([5], 1.0), ([3, 0, 1], 0.625)],
)
def test_expected_masked_share__matches_hand_counts(sizes, share):
    assert expected_masked_share(sizes) == pytest.approx(share, abs=1e-12)


def test_expected_masked_share__equals_the_share_of_same_subject_pairs():
    # Every (query item, key item) pair counted, as the loss's mask would: the same subject masks.
    sizes = [7, 1, 3, 3, 12]
    subjects = np.repeat(np.arange(len(sizes)), sizes)
    same = subjects[:, None] == subjects[None, :]
    assert expected_masked_share(sizes) == pytest.approx(same.mean(), abs=1e-12)


@pytest.mark.parametrize("sizes", [[], [0, 0], [3, -1]])
def test_expected_masked_share__rejects_no_items_or_negative_sizes(sizes):
    with pytest.raises(ValueError, match="subject_sizes"):
        expected_masked_share(sizes)


def test_plan_masking__balanced_subjects_are_all_masked():
    items = [f"sub-{i:02d}" for i in range(25) for _ in range(15)]  # 25 subjects, 15 slices each
    plan = plan_masking(items, max_share=0.05)
    assert plan.masked == frozenset(items) and not plan.unmasked
    assert plan.share == pytest.approx(0.04) and plan.masked_share == pytest.approx(0.04)
    assert plan.message(0.05) is None


def test_plan_masking__the_largest_subjects_are_left_unmasked_within_the_bound():
    items = ["group-7"] * 97 + ["sub-a", "sub-b", "sub-c"]
    plan = plan_masking(items, max_share=0.05)
    # the three singletons cost 3 x 0.01² = 0.0003; group-7 alone would cost 0.9409
    assert plan.masked == {"sub-a", "sub-b", "sub-c"} and plan.unmasked == (("group-7", 0.97),)
    assert plan.share == pytest.approx(0.9412) and plan.masked_share == pytest.approx(0.0003)
    message = plan.message(0.05)
    assert "\n" not in message and "94.1%" in message and "moco.mask_max_share=0.05" in message
    assert "not the largest 1: 'group-7' 97.0%" in message and "moco.mask_same_subject=false" in message


def test_plan_masking__smallest_first_up_to_the_bound_exactly():
    # sizes 1, 2, 3, 4 of 10: costs 0.01, 0.04, 0.09, 0.16
    items = ["a"] + ["b"] * 2 + ["c"] * 3 + ["d"] * 4
    assert plan_masking(items, max_share=0.05).masked == {"a", "b"}  # 0.05: exactly at the bound
    assert plan_masking(items, max_share=0.049).masked == {"a"}
    assert plan_masking(items, max_share=1.0).masked == {"a", "b", "c", "d"}
    assert [s for s, _ in plan_masking(items, max_share=0.0).unmasked] == ["d", "c", "b", "a"]
