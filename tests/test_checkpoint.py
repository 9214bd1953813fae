import random

import numpy as np
import torch

from mocomri.train.checkpoint import atomic_save, last_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state


def test_rng_state__round_trip_through_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = rng_state()
    atomic_save({"rng": state}, tmp_path / "s.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path / "s.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_save_checkpoint__keeps_last_and_rotates(tmp_path):
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, {"step": step}, step, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.pt", "step_00000020.pt", "step_00000030.pt"]
    assert load_checkpoint(last_checkpoint(tmp_path))["step"] == 30


def test_atomic_save__failure_leaves_old_file(tmp_path):
    path = tmp_path / "c.pt"
    atomic_save({"v": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    try:
        atomic_save({"v": Unpicklable()}, path)
    except RuntimeError:
        pass
    assert load_checkpoint(path)["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
