"""``model.init``: a backbone's starting weights read from a run directory or an encoder.pt,
checked against the architecture, and both MoCo encoders starting from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mocomri.config import load_config, save_config
from mocomri.errors import ConfigError
from mocomri.files import file_digest
from mocomri.models import create_encoder
from mocomri.models.initial_weights import read_initial_weights
from mocomri.train.pretrain import build_model

TINY = ["model.width=8", "moco.queue_size=16", "moco.proj_hidden_dim=32", "moco.proj_dim=16", "moco.bn_splits=2"]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory as pretraining leaves it: config.yaml and a width-8 encoder.pt (seed 1)."""
    run = tmp_path / "earlier_run"
    run.mkdir()
    save_config(load_config(None, TINY), run / "config.yaml")
    torch.manual_seed(1)
    torch.save(create_encoder("resnet18", width=8)[0].state_dict(), run / "encoder.pt")
    return run


def test_build_model__both_encoders_start_from_the_init_weights_and_the_heads_do_not(run_dir: Path):
    cfg = load_config(None, [*TINY, f"model.init={run_dir}"])
    init = read_initial_weights(cfg.model.init, cfg.model)
    assert init.path == run_dir / "encoder.pt" and init.sha1 == file_digest(run_dir / "encoder.pt")
    file_state = torch.load(run_dir / "encoder.pt", weights_only=True)

    torch.manual_seed(0)
    model = build_model(cfg, init)
    for encoder in (model.base_encoder, model.momentum_encoder):  # query and key encoder at step 0
        state = encoder.state_dict()
        assert state.keys() == file_state.keys()
        for name, tensor in file_state.items():
            assert torch.equal(state[name], tensor), name
    # The heads are those of a random-init run with the same seed: new, and alike in both branches.
    torch.manual_seed(0)
    random_init = build_model(load_config(None, TINY))
    assert not torch.equal(random_init.base_encoder.conv1.weight, model.base_encoder.conv1.weight)
    for name, tensor in random_init.projector.state_dict().items():
        assert torch.equal(model.projector.state_dict()[name], tensor), name
        assert torch.equal(model.momentum_projector.state_dict()[name], tensor), name


def test_read_initial_weights__another_width_names_the_file_the_parameter_and_both_shapes(run_dir: Path):
    cfg = load_config(None, [*TINY, "model.width=16", f"model.init={run_dir / 'encoder.pt'}"])
    with pytest.raises(ConfigError) as e:
        read_initial_weights(cfg.model.init, cfg.model)
    message = str(e.value)
    assert "\n" not in message
    assert str(run_dir / "encoder.pt") in message
    assert "conv1.weight is (8, 1, 7, 7) in the file but (16, 1, 7, 7) in the model" in message


def test_read_initial_weights__a_deeper_architecture_names_the_first_missing_parameter(run_dir: Path):
    cfg = load_config(None, [*TINY, "model.name=resnet34", f"model.init={run_dir}"])
    with pytest.raises(ConfigError, match=r"layer1\.2\.conv1\.weight \(8, 8, 3, 3\) is not in the file"):
        read_initial_weights(cfg.model.init, cfg.model)


def test_read_initial_weights__a_missing_path_is_named(tmp_path: Path):
    cfg = load_config(None, [*TINY, f"model.init={tmp_path / 'nowhere'}"])
    with pytest.raises(FileNotFoundError, match=f"^model.init={tmp_path / 'nowhere'}: encoder weights not found"):
        read_initial_weights(cfg.model.init, cfg.model)


def test_read_initial_weights__a_checkpoint_is_not_an_encoder(run_dir: Path):
    torch.save({"model": {}, "step": 3}, run_dir / "last.pt")
    cfg = load_config(None, [*TINY, f"model.init={run_dir / 'last.pt'}"])
    with pytest.raises(ConfigError, match=r"is not an encoder's state_dict \(it holds model, step\)"):
        read_initial_weights(cfg.model.init, cfg.model)


def test_read_initial_weights__draws_nothing_from_the_global_rng(run_dir: Path):
    cfg = load_config(None, [*TINY, f"model.init={run_dir}"])
    before = torch.get_rng_state()
    read_initial_weights(cfg.model.init, cfg.model)
    assert torch.equal(torch.get_rng_state(), before)
