from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from mocomri.models.queue import KeyQueue


def _reference_ring(queue_size: int, batches: list[torch.Tensor]) -> tuple[list[int | None], int]:
    """A plain Python ring: push ids one at a time; slot i holds the id written there last."""
    slots: list[int | None] = [None] * queue_size
    ptr = 0
    for batch in batches:
        for item in batch.tolist():
            slots[ptr] = item
            ptr = (ptr + 1) % queue_size
    return slots, ptr


def _run(queue_size: int, batch_sizes: list[int], dim: int = 3) -> None:
    queue = KeyQueue(queue_size, dim)
    initial = queue.keys.clone()
    # Key i is a unit vector that encodes i, so each slot says which key it holds.
    next_id, id_batches = 0, []
    for b in batch_sizes:
        ids = torch.arange(next_id, next_id + b)
        next_id += b
        keys = F.normalize(torch.stack([ids.float() + 1.0, torch.ones(b), torch.zeros(b)], dim=1), dim=1)
        queue.enqueue(keys, subjects=ids)
        id_batches.append(ids)
    slots, ptr = _reference_ring(queue_size, id_batches)

    assert int(queue.ptr) == ptr
    for slot, expected in enumerate(slots):
        if expected is None:
            assert queue.subjects[slot] == -1
            assert torch.equal(queue.keys[slot], initial[slot])
        else:
            assert queue.subjects[slot] == expected
            want = F.normalize(torch.tensor([expected + 1.0, 1.0, 0.0]), dim=0)
            assert torch.equal(queue.keys[slot], want)


def test_queue__wraps_around_slot_by_slot():
    _run(queue_size=8, batch_sizes=[3, 3, 3, 3, 3])


def test_queue__batch_not_dividing_size_and_smaller_last_batch():
    _run(queue_size=10, batch_sizes=[4, 4, 4, 2, 4, 1])


def test_queue__batch_larger_than_queue_keeps_newest_in_fifo_order():
    _run(queue_size=5, batch_sizes=[2, 12, 3, 7])


def test_queue__batch_equal_to_queue_size():
    _run(queue_size=4, batch_sizes=[1, 4, 4])


def test_queue__initial_keys_are_unit_norm_with_unknown_subjects():
    queue = KeyQueue(16, 4)
    assert queue.keys.shape == (16, 4)
    torch.testing.assert_close(queue.keys.norm(dim=1), torch.ones(16))
    assert torch.equal(queue.subjects, torch.full((16,), -1))
    assert queue.subjects.dtype == torch.int64 and int(queue.ptr) == 0


def test_queue__missing_subjects_are_recorded_as_unknown():
    queue = KeyQueue(4, 2)
    queue.enqueue(F.normalize(torch.ones(2, 2), dim=1), subjects=torch.tensor([7, 8]))
    queue.enqueue(F.normalize(torch.ones(3, 2), dim=1))
    assert queue.subjects.tolist() == [-1, 8, -1, -1]


def test_queue__state_dict_round_trip():
    source = KeyQueue(6, 3)
    source.enqueue(F.normalize(torch.randn(4, 3), dim=1), torch.arange(4))
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)

    restored = KeyQueue(6, 3)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for name in ("keys", "subjects", "ptr"):
        assert torch.equal(getattr(restored, name), getattr(source, name)), name
    # The restored pointer keeps writing where the source would.
    batch = F.normalize(torch.randn(5, 3), dim=1)
    source.enqueue(batch, torch.arange(5))
    restored.enqueue(batch, torch.arange(5))
    assert torch.equal(restored.keys, source.keys) and int(restored.ptr) == int(source.ptr) == 3


def test_queue__buffers_not_parameters():
    queue = KeyQueue(4, 2)
    assert list(queue.parameters()) == []
    assert set(queue.state_dict()) == {"keys", "subjects", "ptr"}


@pytest.mark.parametrize(
    ("size", "dim", "message"), [(0, 4, "queue_size=0 must be positive"), (8, -1, "dim=-1 must be positive")]
)
def test_queue__invalid_size_raises(size, dim, message):
    with pytest.raises(ValueError, match=message):
        KeyQueue(size, dim)


def test_queue__wrong_key_shape_raises():
    queue = KeyQueue(8, 4)
    with pytest.raises(ValueError, match=r"keys.shape=\(2, 3\) must be \(B, 4\)"):
        queue.enqueue(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"subjects.shape=\(3,\) must be \(2,\)"):
        queue.enqueue(torch.zeros(2, 4), torch.arange(3))
